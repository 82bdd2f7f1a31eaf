// An edge worker (Cloudflare Workers module syntax; plain JavaScript, only `fetch`) that
// serves each request from the origin and, when the answer is a successful HTML page,
// records a server-side pageview with hitstream's batch endpoint after the response is sent.
//
// Settings (the worker's environment): HITSTREAM_URL (https://ingest.example.com),
// HITSTREAM_TOKEN (a token with a role on the site), optionally ORIGIN (fetch pages from this
// base URL instead of the request's own) and VISITOR_IP_HEADER (the header the platform fills
// with the visitor's address: cf-connecting-ip on Cloudflare, x-real-ip behind nginx).
//
// Each pageview carries a page_id chosen here, and the request an Idempotency-Key, so a
// retry after a lost answer is stored once. 429 and 503 are retried after Retry-After
// (plus jitter), network errors and other 5xx after a short backoff, for at most 20 s.

const BATCH_PATH = "/api/ingest/server/pageviews";
const RETRY_FOR_MS = 20_000;

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const origin = env.ORIGIN ? new URL(url.pathname + url.search, env.ORIGIN) : url;
    const response = await fetch(new Request(origin, request));
    if (isPage(request, response)) {
      ctx.waitUntil(recordPageview(request, env));
    }
    return response;
  },
};

function isPage(request, response) {
  const type = (response.headers.get("content-type") || "").split(";")[0].trim().toLowerCase();
  return response.ok && request.method !== "HEAD" && (type === "text/html" || type === "application/xhtml+xml");
}

export async function recordPageview(request, env) {
  const headers = request.headers;
  const pageview = {
    url: request.url,
    timestamp: new Date().toISOString(),
    visitor_ip: headers.get(env.VISITOR_IP_HEADER || "cf-connecting-ip") || "",
    user_agent: headers.get("user-agent") || "",
    referrer: headers.get("referer") || undefined,
    language: (headers.get("accept-language") || "").split(",")[0].split(";")[0].trim() || undefined,
    page_id: crypto.randomUUID(),
  };
  const init = {
    method: "POST",
    headers: {
      Authorization: `Bearer ${env.HITSTREAM_TOKEN}`,
      "Content-Type": "application/json",
      "Idempotency-Key": crypto.randomUUID(),
    },
    body: JSON.stringify([pageview]),
  };
  const giveUpAt = Date.now() + RETRY_FOR_MS;
  for (let attempt = 0; ; attempt++) {
    let waitMs;
    try {
      const answer = await fetch(env.HITSTREAM_URL + BATCH_PATH, init);
      if (answer.status < 500 && answer.status !== 429) {
        return answer.status; // 202 accepted (or 400/401/403/404: retrying will not help)
      }
      const retryAfter = Number(answer.headers.get("retry-after"));
      waitMs = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : 100 * 2 ** attempt;
    } catch {
      waitMs = 100 * 2 ** attempt; // the network: try again shortly
    }
    waitMs *= 1 + Math.random() / 4; // never sooner than asked; spreads concurrent retries
    if (Date.now() + waitMs > giveUpAt) {
      return 0; // gave up: analytics must never hold the page
    }
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}
