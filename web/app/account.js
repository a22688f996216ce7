// The account page: who is signed in (GET /users/me), change password, delete the account.
import { ApiError, getJson, request, session, signIn } from "./api.js";
import { $, confirmDialog, formatDate, h, showErrors } from "./dom.js";

export class Account {
  constructor({ gallery, onDeleted }) {
    this.gallery = gallery;
    this.onDeleted = onDeleted;
    $("password-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.changePassword();
    });
    $("delete-account-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.deleteAccount();
    });
  }

  async show() {
    showErrors($("account-errors"), null);
    $("password-ok").textContent = "";
    // For password managers: which account these password fields belong to.
    for (const el of document.querySelectorAll(".account-username")) el.value = session.username;
    const info = $("account-info");
    info.replaceChildren(h("dt", {}, "Username"), h("dd", {}, session.username));
    try {
      const me = await getJson("/users/me");
      info.replaceChildren(
        ...[
          ["Username", me.username],
          ["Photos", String(me.photo_count)],
          ["Member since", formatDate(me.created_at)],
        ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k.toLowerCase() }, v)]),
      );
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      showErrors($("account-errors"), e.status === 404 ? ["This server does not offer account details yet."] : e);
    }
  }

  async changePassword() {
    const current = $("current-password");
    const next = $("new-password");
    const errors = $("password-errors");
    showErrors(errors, null);
    $("password-ok").textContent = "";
    // The change ends every token issued before it, ours included: until we hold the new one, a 401 is expected.
    this.gallery.pause();
    session.holding = true;
    try {
      await getJson("/users/me/password", {
        method: "POST",
        json: { current_password: current.value, new_password: next.value },
      });
    } catch (e) {
      session.holding = false;
      this.gallery.resume();
      if (!(e instanceof ApiError && e.status === 401)) showErrors(errors, e);
      else session.refused(401, e.detail);
      return;
    }
    const username = session.username;
    const password = next.value;
    current.value = next.value = "";
    try {
      await signIn(username, password);
      session.holding = false;
      this.gallery.resume();
      $("password-ok").textContent = "Password changed. Other devices have been signed out.";
    } catch {
      session.holding = false;
      session.end("Password changed. Please sign in with your new password.");
    }
  }

  async deleteAccount() {
    const password = $("delete-password");
    const errors = $("delete-account-errors");
    showErrors(errors, null);
    if (!password.value) {
      showErrors(errors, ["Enter your password to delete your account."]);
      return;
    }
    const ok = await confirmDialog(`Delete the account ${session.username} and all its photos? This cannot be undone.`, "Delete account");
    if (!ok) return;
    // The deletion ends our token: the live stream must not take its 401 for an expired session.
    this.gallery.pause();
    try {
      await request("/users/me", { method: "DELETE", json: { password: password.value } });
    } catch (e) {
      this.gallery.resume();
      if (!(e instanceof ApiError && e.status === 401)) showErrors(errors, e);
      return;
    }
    password.value = "";
    this.onDeleted();
  }
}
