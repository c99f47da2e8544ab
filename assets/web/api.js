// Talking to the Taskdeck API: the secret, JSON calls, and the two
// streams (events, log follow) read with fetch(), since EventSource
// cannot send the Authorization header. Every URL is relative, so the page
// works over http and https and behind a proxy's path prefix.

const TOKEN_KEY = "taskdeck.token";

/** The secret this tab keeps, taking one from the URL fragment first. */
export function takeToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const given = hash.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    hash.delete("token");
    const rest = hash.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An error the API answered, with its status and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called when the server refuses the secret (401). */
let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

function headers(extra) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  return { Authorization: "Bearer " + token, ...extra };
}

async function failure(response) {
  let code = "http_" + response.status;
  let message = response.status + " " + response.statusText;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: the status line says enough.
  }
  if (response.status === 401) onUnauthorized(message);
  return new ApiError(response.status, code, message);
}

/** A JSON call: `api("GET", "api/v1/tasks?limit=5")`. */
export async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", "the server cannot be reached: " + error.message);
  }
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/**
 * Follows `api/v1/events` until `signal` aborts, calling `onEvent(type,
 * data)` for each event; reconnects after a pause when the stream ends,
 * resuming after the last id it saw. `onState(connected)` reports the link.
 */
export async function followEvents(kinds, onEvent, onState, signal) {
  let lastId = null;
  while (!signal.aborted) {
    try {
      const query = new URLSearchParams({ kinds });
      if (lastId) query.set("last_event_id", lastId);
      const response = await fetch("api/v1/events?" + query, {
        headers: headers({ Accept: "text/event-stream" }),
        cache: "no-store",
        signal,
      });
      if (!response.ok) throw await failure(response);
      onState(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = "message";
          let data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("id: ")) lastId = line.slice(4);
            else if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          try {
            onEvent(type, JSON.parse(data));
          } catch (error) {
            console.error("event", type, error);
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) return;
    }
    onState(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

/**
 * Follows a task's log, calling `onText(text)` as bytes arrive, until the
 * attempt ends or `signal` aborts. Resolves to whether a log was found.
 */
export async function followLog(id, onText, signal) {
  const response = await fetch(`api/v1/tasks/${id}/log?follow=true`, {
    headers: headers(),
    cache: "no-store",
    signal,
  });
  if (response.status === 404) return false;
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return true;
    onText(value);
  }
}
