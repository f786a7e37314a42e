// Sign-in in token mode: the form shown instead of the chats when the gateway refuses this
// tab's token (or wants one), and "Signed in as …" with "Sign out" once it is accepted.
//
// The token is kept in sessionStorage (this tab only, gone with it). Signing in or out
// reloads the page, so nothing of the previous user's chats stays in memory or on screen.
// In local mode the gateway wants no token, so none of this is ever shown.

import { forgetToken, hasToken, keepToken, refusalOf } from "./connection.js";

const $ = (id) => document.getElementById(id);
const panel = $("sign-in");
const reason = $("sign-in-reason");
const form = $("sign-in-form");
const field = $("sign-in-token");
const account = $("account");

/** Show the sign-in with why the gateway refused (`held`: this tab had sent a token). */
export function showSignIn(message, held) {
  document.body.classList.add("signed-out");
  account.hidden = true;
  panel.hidden = false;
  reason.textContent = explain(message, held);
  field.focus();
}

/** "Signed in as <user>", from the gateway's welcome; only for a tab holding a token. */
export function showAccount(userId) {
  if (!hasToken()) return;
  $("account-name").textContent = `Signed in as ${userId}`;
  account.hidden = false;
}

export function listenSignIn() {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = field.value.trim();
    if (!candidate) return;
    $("sign-in-submit").disabled = true;
    const refusal = await refusalOf(candidate);
    $("sign-in-submit").disabled = false;
    if (refusal !== null) {
      reason.textContent = explain(refusal, true);
      field.select();
      return;
    }
    keepToken(candidate);
    location.reload();
  });
  $("sign-out").addEventListener("click", () => {
    forgetToken();
    location.reload();
  });
}

function explain(message, held) {
  if (/expired/i.test(message)) return "Your token has expired. Paste a new one to sign in.";
  if (!held) return "This gateway needs a token to show your chats.";
  return `That token was not accepted: ${message}.`;
}
