// Loads the dashboard. A module that fails to arrive (the network changed under the
// browser, a gateway restarting) fails the whole app, and the browser keeps that failure
// for the page: without this, the person would look at "Loading…" until they reload.
// So reload for them, a few times with growing pauses, then say what happened.

const KEY = "slipway.boot-tries";
const TRIES = 3;

const tried = Number(sessionStorage.getItem(KEY) || "0");

import("./app.js").then(
  () => sessionStorage.removeItem(KEY),
  (err) => {
    if (tried < TRIES) {
      sessionStorage.setItem(KEY, String(tried + 1));
      setTimeout(() => location.reload(), 1000 * 2 ** tried);
      return;
    }
    sessionStorage.removeItem(KEY);
    const main = document.getElementById("main");
    main.textContent = "";
    const line = document.createElement("p");
    line.className = "error";
    line.textContent = `The dashboard could not load (${err.message}). Reload the page to try again.`;
    main.append(line);
  },
);
