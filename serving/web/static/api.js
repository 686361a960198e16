// Talking to the Cairn service: the API key, JSON errors in OpenAI's shape, and server-sent events.

const KEY_STORAGE = 'cairn.apiKey'
let apiKey = localStorage.getItem(KEY_STORAGE) || ''
let askForKey = async () => null
let asking = null  // one prompt at a time, however many requests were refused

/** Set the function that asks the user for an API key (it resolves to the key, or null). */
export function onKeyNeeded(ask) { askForKey = ask }

/** Forget the stored API key. */
export function forgetKey() { apiKey = ''; localStorage.removeItem(KEY_STORAGE) }

/** An error from the service, with its HTTP status and OpenAI-style code. */
export class ApiError extends Error {
  constructor(message, status, code) { super(message); this.status = status; this.code = code }
}

/** Fetch a path of this service with the API key; on 401 ask for a key once per attempt and retry. */
export async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {})
    if (apiKey) headers.set('Authorization', `Bearer ${apiKey}`)
    let response
    try {
      response = await fetch(path, { ...options, headers })
    } catch (error) {
      if (error.name === 'AbortError') throw error
      throw new ApiError(`Cannot reach the Cairn service at ${location.origin}: is \`cairn serve\` running?`, 0, 'offline')
    }
    if (response.status !== 401) return response
    const problem = await errorOf(response)
    if (headers.get('Authorization') !== (apiKey ? `Bearer ${apiKey}` : null)) continue  // a new key came meanwhile
    asking ??= askForKey(apiKey ? `That key was refused (${problem.message}).` : 'This service needs an API key.')
      .finally(() => { asking = null })
    const key = await asking
    if (!key) throw problem
    apiKey = key.trim()
    localStorage.setItem(KEY_STORAGE, apiKey)
  }
}

/** Return the ApiError a failed response carries (its OpenAI-style message, or its status). */
export async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`, code = `http_${response.status}`
  try {
    const body = await response.json()
    if (body && body.error) { message = body.error.message || message; code = body.error.code || code }
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(message, response.status, code)
}

/** GET a JSON document; throw an ApiError when the service says no. */
export async function getJSON(path, options = {}) {
  const response = await api(path, options)
  if (!response.ok) throw await errorOf(response)
  return response.json()
}

/** Yield the events of a server-sent-events body as {event, data}; unnamed events are "message". */
export async function* serverEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return
      buffer += value.replaceAll('\r\n', '\n')
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        let event = 'message'
        const data = []
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim()
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''))
        }
        if (data.length) yield { event, data: data.join('\n') }
      }
    }
  } finally {
    reader.releaseLock()
  }
}
