// Behaviour events for proactive messages: page changes, time spent on a page (dwell checkpoints) and
// idle time. The server's triggers decide whether anything is said; this only reports what happened.

const ACTIVITY = ["pointerdown", "keydown", "scroll", "touchstart"];

export class Behaviour {
  /**
   * @param {(event: object) => void} report  sends one event ({kind, page, seconds, data})
   * @param {{dwell: number[], idle: number}} options  dwell checkpoints and idle threshold, in seconds
   */
  constructor(report, { dwell = [30, 60, 120, 300], idle = 300 } = {}) {
    this.report = report;
    this.dwell = dwell.filter((s) => s > 0).sort((a, b) => a - b);
    this.idle = idle;
    this.page = null;
    this.pageSince = 0;
    this.lastActivity = Date.now();
    this.timers = [];
    this.idleTimer = null;
    this.onActivity = () => {
      this.lastActivity = Date.now();
      this.armIdle();
    };
  }

  start(page) {
    for (const name of ACTIVITY) window.addEventListener(name, this.onActivity, { passive: true, capture: true });
    this.setPage(page, false);
    this.armIdle();
  }

  stop() {
    for (const name of ACTIVITY) window.removeEventListener(name, this.onActivity, { capture: true });
    this.clear();
    clearTimeout(this.idleTimer);
  }

  clear() {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers = [];
  }

  /** A new page (a real load or a single-page-app route): restart the dwell clock. */
  setPage(page, announce = true) {
    if (!page || page === this.page) return;
    this.page = page;
    this.pageSince = Date.now();
    this.clear();
    if (announce) this.report({ kind: "page_view", page });
    for (const seconds of this.dwell) {
      this.timers.push(setTimeout(() => {
        this.report({ kind: "dwell", page: this.page, seconds: Math.round((Date.now() - this.pageSince) / 1000) });
      }, seconds * 1000));
    }
  }

  armIdle() {
    if (!this.idle) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.report({ kind: "idle", page: this.page, seconds: Math.round((Date.now() - this.lastActivity) / 1000) });
    }, this.idle * 1000);
  }
}
