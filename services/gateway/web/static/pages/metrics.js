// Metrics over the last hour or day (GET /apps/{app}/metrics/series): CPU, memory,
// requests, router status codes (stacked) and response times, as SVG charts.

import { api, ApiError } from "../api.js";
import { h, section } from "../dom.js";
import { chart } from "../chart.js";
import { appFrame } from "./frame.js";

export async function render(main, ctx, name) {
  const frame = await appFrame(main, name, ctx, "/metrics");
  const charts = h("div", { id: "charts", class: "charts" });
  const buttons = ["1h", "24h"].map((period) =>
    h("button", { type: "button", class: "toggle", "data-period": period }, period === "1h" ? "Last hour" : "Last 24 hours"),
  );
  frame.body.append(section("Metrics", h("div", { class: "toggles", role: "group" }, buttons), charts));

  async function load(period) {
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.period === period));
    let series;
    try {
      series = await api("GET", `${frame.path}/metrics/series?period=${period}`, undefined, {
        signal: ctx.signal,
      });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      charts.replaceChildren(h("p", { class: "muted", id: "no-data" }, "No data."));
      return;
    }
    const points = (series && series.points) || [];
    const measured = points.some((p) =>
      ["cpu_percent", "memory_mb", "requests"].some((k) => typeof p[k] === "number"),
    );
    if (!measured) {
      charts.replaceChildren(h("p", { class: "muted", id: "no-data" }, "No data."));
      return;
    }
    charts.replaceChildren(
      chart({ id: "chart-cpu", title: "CPU", unit: "% of one CPU", points, series: [{ key: "cpu_percent", label: "CPU", cls: "s1" }] }),
      chart({
        id: "chart-memory",
        title: "Memory",
        unit: "MB",
        points,
        series: [
          { key: "memory_mb", label: "used", cls: "s1" },
          { key: "memory_quota_mb", label: "quota", cls: "s4" },
        ],
      }),
      chart({ id: "chart-requests", title: "Requests", unit: "per step", points, series: [{ key: "requests", label: "requests", cls: "s2" }] }),
      chart({
        id: "chart-status",
        title: "Router status codes",
        stacked: true,
        points,
        series: [
          { key: "status_2xx", label: "2xx", cls: "ok" },
          { key: "status_3xx", label: "3xx", cls: "s2" },
          { key: "status_4xx", label: "4xx", cls: "warn" },
          { key: "status_5xx", label: "5xx", cls: "bad" },
        ],
      }),
      chart({
        id: "chart-latency",
        title: "Response time",
        unit: "ms",
        points,
        series: [
          { key: "p50_ms", label: "p50", cls: "s1" },
          { key: "p95_ms", label: "p95", cls: "s3" },
        ],
      }),
    );
  }
  for (const b of buttons) b.addEventListener("click", () => load(b.dataset.period).catch(() => {}));
  await load("1h");
}
