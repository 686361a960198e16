// A tiny HTTP client for a tinykv server, with retries and exponential backoff.

const DEFAULT_RETRIES = 3;

export class TinyKVClient {
  constructor(baseUrl, { retries = DEFAULT_RETRIES } = {}) {
    this.baseUrl = baseUrl;
    this.retries = retries;
  }

  async get(key) {
    const response = await this.requestWithRetry(`/keys/${encodeURIComponent(key)}`);
    return response.status === 404 ? null : response.text();
  }

  async requestWithRetry(path, options = {}) {
    let delay = 100;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fetch(this.baseUrl + path, options);
      } catch (error) {
        if (attempt >= this.retries) throw error;
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay *= 2;
      }
    }
  }
}

export function parseKeyList(body) {
  return body.split("\n").filter((line) => line.length > 0);
}
