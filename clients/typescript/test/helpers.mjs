// Shared by the tests: waiting for a client's state or event, never sleeping.

/** Resolves with the first connection state that satisfies `pred` (the current one included). */
export function stateWhere(client, pred, what = "state") {
  if (pred(client.state)) return Promise.resolve(client.state);
  return within(
    new Promise((resolve) => {
      const off = client.on("connection", (s) => {
        if (pred(s)) {
          off();
          resolve(s);
        }
      });
    }),
    what,
  );
}

export const kind = (k) => (s) => s.kind === k;

/** Resolves with the next payload of `event` that satisfies `pred`. */
export function nextEvent(client, event, pred = () => true) {
  return within(
    new Promise((resolve) => {
      const off = client.on(event, (p) => {
        if (pred(p)) {
          off();
          resolve(p);
        }
      });
    }),
    `event ${event}`,
  );
}

/** Rejects when `p` does not settle within `ms` (a failing test ends instead of hanging). */
export function within(p, what, ms = 10000) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Every connection state the client goes through, recorded. */
export function record(client) {
  const states = [];
  client.on("connection", (s) => states.push(s));
  return states;
}
