// One way to talk to the server: JSON in and out, errors as ApiError, the CSRF header on every
// state-changing request, and a single hook for "the session is gone" (401).

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** Network failure (no HTTP answer at all). */
  get offline(): boolean {
    return this.status === 0;
  }
}

interface HttpHooks {
  csrfToken: () => string | null;
  onUnauthorized: () => void;
  /** Fetch a fresh CSRF token (GET /api/auth/me); called once when the server refuses ours. */
  refreshCsrf: () => Promise<void>;
}

const hooks: HttpHooks = {
  csrfToken: () => null,
  onUnauthorized: () => undefined,
  refreshCsrf: async () => undefined,
};

export function configureHttp(next: Partial<HttpHooks>): void {
  Object.assign(hooks, next);
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** Headers every request carries: the CSRF token on state-changing methods when the server gave one. */
export function authHeaders(method: string): Record<string, string> {
  const token = hooks.csrfToken();
  return UNSAFE.has(method.toUpperCase()) && token ? { "X-CSRF-Token": token } : {};
}

export async function errorFrom(response: Response): Promise<ApiError> {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body: unknown = await response.json();
    if (body && typeof body === "object" && "error" in body) {
      const err = (body as { error: { code?: unknown; message?: unknown } }).error;
      if (typeof err.code === "string") code = err.code;
      if (typeof err.message === "string") message = err.message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

export interface RequestOptions {
  body?: unknown;
  form?: FormData;
  signal?: AbortSignal;
  /** Do not call the unauthorized hook on 401 (the session probe itself). */
  quiet401?: boolean;
}

export async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  try {
    return await attempt<T>(method, path, options);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 403 && exc.code === "csrf_failed") {
      await hooks.refreshCsrf();
      return attempt<T>(method, path, options);
    }
    throw exc;
  }
}

async function attempt<T>(method: string, path: string, options: RequestOptions): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...authHeaders(method) };
  let body: BodyInit | undefined;
  if (options.form) {
    body = options.form;
  } else if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body,
      credentials: "same-origin",
      signal: options.signal,
    });
  } catch (exc) {
    if (exc instanceof DOMException && exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network_error", exc instanceof Error ? exc.message : String(exc));
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && !options.quiet401) hooks.onUnauthorized();
    throw error;
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const http = {
  get: <T>(path: string, options?: RequestOptions) => request<T>("GET", path, options),
  post: <T>(path: string, body?: unknown, options?: RequestOptions) =>
    request<T>("POST", path, { ...options, body }),
  patch: <T>(path: string, body?: unknown) => request<T>("PATCH", path, { body }),
  delete: <T>(path: string) => request<T>("DELETE", path),
};

export function query(params: Record<string, string | number | boolean | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) q.set(key, String(value));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}
