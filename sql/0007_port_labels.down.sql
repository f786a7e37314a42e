-- loses data: every port label users gave
--
-- Undoes 0007_port_labels.sql. The labels are what people typed; nothing recomputes them.

DROP TABLE port_labels;
