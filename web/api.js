// The page's reads of /api (SPEC §3), with the signed-in credential as a bearer token.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET `path` as JSON; throws ApiError with a message in words. */
export async function getJson(path, credential) {
  const headers = { Accept: "application/json" };
  if (credential) headers.Authorization = `Bearer ${credential}`;
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch {
    throw new ApiError(0, "cannot reach the server; check your network connection");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A proxy's HTML error page: the status alone has to do.
  }
  if (!response.ok) {
    throw new ApiError(response.status, describeHttpStatus(response.status, body?.error));
  }
  return body;
}

function describeHttpStatus(status, detail) {
  const because = typeof detail === "string" ? detail : detail?.message;
  switch (status) {
    case 401:
      return "the server needs a valid API key or token: sign in";
    case 403:
      return `your credential does not allow this${because ? ` (${because})` : ""}`;
    case 404:
      return because ?? "not found";
    case 503:
      return because ?? "the server is not ready or is shutting down; try again shortly";
    default:
      return `the server answered HTTP ${status}${because ? `: ${because}` : ""}`;
  }
}
