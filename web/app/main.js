// PetCam web gallery: which view shows, signing in and out, and the parts wired together.
import { register, session, signIn } from "./api.js";
import { $, showErrors } from "./dom.js";
import { Gallery } from "./gallery.js";
import { Uploader } from "./upload.js";
import { Viewer } from "./viewer.js";
import { Account } from "./account.js";

const views = ["auth-view", "gallery-view", "account-view"];

function notify(message) {
  const notice = $("notice");
  notice.textContent = message || "";
  notice.hidden = !message;
}

let viewer;
const gallery = new Gallery({
  onOpen: (photo) => viewer.open(photo),
  onChange: (photo) => viewer.changed(photo),
});
viewer = new Viewer(gallery, notify);
const uploader = new Uploader(gallery);
const account = new Account({
  gallery,
  onDeleted: () => signedOut("Your account and its photos have been deleted."),
});

function show(view) {
  for (const v of views) $(v).hidden = v !== view;
  $("nav").hidden = view === "auth-view";
  for (const [link, v] of [["nav-gallery", "gallery-view"], ["nav-account", "account-view"]]) {
    if (v === view) $(link).setAttribute("aria-current", "page");
    else $(link).removeAttribute("aria-current");
  }
}

// The view the address asks for, once signed in.
function route() {
  if (!session.signedIn) {
    show("auth-view");
    return;
  }
  if (location.hash === "#account") {
    show("account-view");
    account.show();
  } else {
    show("gallery-view");
  }
}

function signedIn() {
  notify("");
  for (const f of ["signin-form", "register-form"]) $(f).reset();
  gallery.start();
  route();
}

function signedOut(message) {
  session.clear();
  gallery.stop();
  uploader.reset();
  for (const d of document.querySelectorAll("dialog[open]")) d.close();
  show("auth-view");
  notify(message);
  $("signin-username").focus();
}

session.onSignedOut = signedOut;
$("sign-out").addEventListener("click", () => signedOut("You have signed out."));
window.addEventListener("hashchange", route);

// Sign in / register tabs (arrow keys move between them, as a tablist does).
const tabs = [$("tab-signin"), $("tab-register")];
function selectTab(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  tab.focus();
}
for (const t of tabs) {
  t.addEventListener("click", () => selectTab(t));
  t.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") selectTab(tabs[(tabs.indexOf(t) + 1) % 2]);
  });
}

async function submit(form, errorsId, action) {
  const button = form.querySelector("button[type=submit]");
  showErrors($(errorsId), null);
  button.disabled = true;
  try {
    await action();
    signedIn();
  } catch (e) {
    showErrors($(errorsId), e);
  } finally {
    button.disabled = false;
  }
}

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  submit(e.target, "signin-errors", () => signIn($("signin-username").value, $("signin-password").value));
});
$("register-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const username = $("register-username").value;
  const password = $("register-password").value;
  submit(e.target, "register-errors", async () => {
    await register(username, password);
    await signIn(username, password);
  });
});

if (session.signedIn) gallery.start();
route();
