// The live event stream: one WebSocket to the page's own host, reconnected with capped
// exponential backoff. `onOpen` runs after every (re)connection so the page can refresh its full
// state and miss nothing that happened while it was disconnected.

const BACKOFF_MS = [250, 500, 1000, 2000, 3000];
const MAX_BACKOFF_MS = 3000;
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;

export class LiveStream {
  /**
   * @param {object} options
   * @param {() => string} options.url  WebSocket URL, re-read on every attempt (the token
   *   may change)
   * @param {(msg: object) => void} options.onMessage
   * @param {() => void} options.onOpen
   * @param {(state: string, detail: object) => void} options.onState
   *   "connecting" | "live" | "offline"
   * @param {(failures: number) => void} [options.onFailure]  after each attempt that never opened
   */
  constructor(options) {
    this.options = options;
    this.socket = null;
    this.failures = 0;
    this.timer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.stopped = false;
    window.addEventListener("online", () => this.reconnectNow());
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  /** Drop any wait and connect at once (e.g. after the token changed or the network came back). */
  reconnectNow() {
    if (this.stopped) return;
    const busy = this.socket && this.socket.readyState <= WebSocket.OPEN;
    if (busy) return;
    clearTimeout(this.timer);
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.options.onState(this.failures ? "offline" : "connecting", { failures: this.failures });
    let socket;
    try {
      socket = new WebSocket(this.options.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.failures = 0;
      this.options.onState("live", {});
      this.startPings();
      this.options.onOpen();
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && message.type === "pong") {
        clearTimeout(this.pongTimer);
        return;
      }
      this.options.onMessage(message);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.stopPings();
      this.socket = null;
      if (!opened) {
        this.failures += 1;
        if (this.options.onFailure) this.options.onFailure(this.failures);
      }
      if (this.stopped) return;
      this.scheduleReconnect();
    };
    // An error is always followed by close; the close handler does the work.
    socket.onerror = () => {};
  }

  scheduleReconnect() {
    const base = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)] ?? MAX_BACKOFF_MS;
    const delay = Math.min(MAX_BACKOFF_MS, base * (0.8 + Math.random() * 0.4));
    this.options.onState("offline", { failures: this.failures, retryInMs: delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  startPings() {
    this.stopPings();
    // A ping that gets no pong reveals a connection that died without a close frame.
    this.pingTimer = setInterval(() => {
      const socket = this.socket;
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      socket.send(JSON.stringify({ type: "ping" }));
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => socket.close(), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  stopPings() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }
}
