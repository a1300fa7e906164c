// Activity: builds with their output (streamed live from output_stream_url while a build
// runs), then the releases they made.

import { api, streamLines } from "../api.js";
import { ago, busy, h, section, table } from "../dom.js";
import { appFrame, every } from "./frame.js";

function badge(status) {
  const kind = status === "succeeded" ? "ok" : status === "failed" ? "bad" : "wait";
  return h("span", { class: `badge ${kind}` }, status);
}

export async function render(main, ctx, name) {
  const frame = await appFrame(main, name, ctx, "/activity");
  const signal = ctx.signal;
  const buildsBody = h("div", { id: "builds" });
  const releasesBody = h("div", { id: "activity-releases" });
  const output = h("div", { id: "build-output-holder" });
  frame.body.append(section("Builds", buildsBody, output), section("Releases", releasesBody));
  let following = null;

  function follow(build, button) {
    if (following) following.abort();
    following = new AbortController();
    signal.addEventListener("abort", () => following.abort());
    const pre = h("pre", { class: "output", id: "build-output", "data-build": build.id });
    output.replaceChildren(h("h3", {}, `Build ${build.id.slice(0, 8)}`), pre);
    const work = streamLines(
      build.output_stream_url,
      (line) => {
        pre.append(line, "\n");
        pre.scrollTop = pre.scrollHeight;
      },
      following.signal,
    ).catch((error) => {
      if (error.name !== "AbortError") pre.append(`(${error.message})\n`);
    });
    if (button) busy(button, () => work);
  }

  async function loadBuilds(first) {
    const builds = await api("GET", `${frame.path}/builds`, undefined, {
      signal,
      range: "created_at ..; order=desc, max=20",
    }).catch(() => []);
    const rows = builds.map((b) => {
      const show = h("button", { type: "button", class: "small" }, "Output");
      show.addEventListener("click", () => follow(b, show));
      return h(
        "tr",
        { "data-build": b.id },
        h("td", {}, h("code", {}, b.id.slice(0, 8))),
        h("td", {}, badge(b.status)),
        h("td", {}, b.release ? `v${b.release.version}` : ""),
        h("td", {}, b.user ? b.user.email : ""),
        h("td", {}, ago(b.created_at)),
        h("td", {}, b.output_stream_url ? show : null),
      );
    });
    buildsBody.replaceChildren(
      builds.length
        ? table(["Build", "Status", "Release", "By", "When", ""], rows, { id: "build-table" })
        : h("p", { class: "muted" }, "No builds yet: git push to build."),
    );
    const running = builds.find((b) => b.status === "pending");
    if (first && running) follow(running); // a build in progress: show it as it happens
  }

  async function loadReleases() {
    const releases = await api("GET", `${frame.path}/releases`, undefined, {
      signal,
      range: "version ..; order=desc, max=20",
    });
    releasesBody.replaceChildren(
      table(
        ["Version", "Description", "By", "When"],
        releases.map((r) =>
          h(
            "tr",
            {},
            h("td", {}, `v${r.version}`),
            h("td", {}, r.description),
            h("td", {}, r.user ? r.user.email : ""),
            h("td", {}, ago(r.created_at)),
          ),
        ),
      ),
    );
  }

  await Promise.all([loadBuilds(true), loadReleases()]);
  every(10, ctx, () => Promise.all([loadBuilds(false), loadReleases()]));
}
