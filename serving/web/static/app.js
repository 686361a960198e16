// Cairn's page: chat with the agent (its steps, citations and sources), search, sessions, status.
// No build step: Preact and htm from vendor/, modules loaded straight by the browser.

import { html, render, Component, useState, useEffect, useLayoutEffect, useRef, useCallback } from './vendor/htm/preact-standalone.module.js'
import { api, getJSON, errorOf, serverEvents, onKeyNeeded, ApiError } from './api.js'
import { loadStylesheet } from './stylesheets.js'

// Markdown (marked, DOMPurify) loads beside the app, so the input is ready before it is.
const markdownReady = import('./markdown.js')
const TITLES = 'cairn.sessionTitles'
const CONTEXT_LINES = 8

let nextKey = 0

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8))  // works on plain http too, unlike randomUUID
  return 'web-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

function sessionFromHash() {
  const match = /^#session=(.+)$/.exec(location.hash)
  return match ? decodeURIComponent(match[1]) : null
}

function loadTitles() {
  try { return JSON.parse(localStorage.getItem(TITLES) || '{}') } catch { return {} }
}

function saveTitle(id, title) {
  const titles = loadTitles()
  titles[id] = title.replace(/\s+/g, ' ').trim().slice(0, 80)
  localStorage.setItem(TITLES, JSON.stringify(titles))
}

function forgetTitle(id) {
  const titles = loadTitles()
  delete titles[id]
  localStorage.setItem(TITLES, JSON.stringify(titles))
}

function nextTask() {
  return globalThis.scheduler?.yield ? scheduler.yield() : new Promise((resolve) => setTimeout(resolve, 0))
}

function encodePath(path) { return path.split('/').map(encodeURIComponent).join('/') }

function ago(seconds) {
  const delta = Date.now() / 1000 - seconds
  if (delta < 60) return 'just now'
  if (delta < 3600) return `${Math.floor(delta / 60)} min ago`
  if (delta < 86400) return `${Math.floor(delta / 3600)} h ago`
  return new Date(seconds * 1000).toLocaleDateString()
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text)
  } catch {
    // no clipboard API (plain http on another host): the old way
    const area = document.createElement('textarea')
    area.value = text
    area.setAttribute('readonly', '')
    area.style.position = 'fixed'
    area.style.opacity = '0'
    document.body.append(area)
    area.select()
    document.execCommand('copy')
    area.remove()
  }
}

// ---------------------------------------------------------------- the agent's steps

function quoted(items) { return (items || []).map((q) => `"${q}"`).join(', ') }

function describeRunning(step) {
  switch (step.node) {
    case 'plan': return step.planned_by === 'model' ? 'Planning (rewriting the question)' : 'Planning'
    case 'retrieve': return `Searching ${quoted(step.queries)}`
    case 'analyze': return `Reading ${step.documents ?? 0} chunks`
    case 'refine': return step.missing ? `Searching again for what is missing: ${step.missing}` : 'Searching again'
    case 'answer': return `Answering from ${step.sources ?? 0} sources`
    default: return step.node
  }
}

function describeDone(step, running) {
  switch (step.node) {
    case 'plan': return step.queries?.length ? `Planned ${quoted(step.queries)}` : running
    case 'retrieve': return `${running}: found ${step.found ?? 0} chunks, kept ${step.kept ?? 0}`
    case 'analyze': return `Read ${running.replace(/^Reading /, '')}: ${step.relevant ?? 0} relevant` +
      (step.sufficient ? '' : ', not enough')
    case 'refine': return step.queries?.length ? `Refined the search: ${quoted(step.queries)}` : running
    case 'answer': {
      const dropped = step.dropped_citations?.length ? `, ${step.dropped_citations.length} unsupported dropped` : ''
      return `Answered with ${step.citations?.length ?? 0} citations${dropped}`
    }
    default: return running
  }
}

function applyStep(answer, step) {
  if (step.status === 'running') {
    answer.steps.push({ node: step.node, state: 'running', text: describeRunning(step) })
  } else if (step.status === 'done') {
    const open = answer.steps.findLast((s) => s.node === step.node && s.state === 'running')
    if (open) { open.state = 'done'; open.text = describeDone(step, open.text) }
  } else if (step.status === 'thinking') {
    let thinking = answer.steps.findLast((s) => s.state === 'thinking')
    if (!thinking || answer.steps.at(-1) !== thinking) {
      thinking = { node: step.node, state: 'thinking', text: 'Thinking', detail: '' }
      answer.steps.push(thinking)
    }
    thinking.detail += step.thinking || ''
  }
}

function Steps({ answer }) {
  if (!answer.steps.length) return null
  const items = html`<ol>${answer.steps.map((s, i) => html`
    <li key=${i} class=${s.state}><span class="mark" aria-hidden="true"></span>
      <span>${s.text}${s.detail ? html`: <span class="thought">${s.detail.slice(-160)}</span>` : ''}</span></li>`)}</ol>`
  if (!answer.answering && answer.status === 'streaming') {
    return html`<div class="steps live" aria-live="polite" aria-label="What Cairn is doing">${items}</div>`
  }
  const seconds = ((answer.answeredAt ?? performance.now()) - answer.startedAt) / 1000
  return html`<details class="steps done"><summary>${answer.steps.length} steps · ${seconds.toFixed(1)} s before the answer</summary>${items}</details>`
}

// ---------------------------------------------------------------- messages

// The answer's Markdown lives in an element the renderer owns; Preact places it and leaves it alone.
class MarkdownHost extends Component {
  shouldComponentUpdate(next) { return next.element !== this.props.element }
  componentDidMount() { this.base.append(this.props.element) }
  componentDidUpdate() { this.base.replaceChildren(this.props.element) }
  render() { return html`<div class="bubble md"></div>` }
}

function Sources({ answer }) {
  const sources = answer.cairn?.sources || []
  if (!sources.length) return null
  const cited = new Set(answer.cairn.citations || [])
  return html`<section class="sources" aria-label="Sources">
    <h3>Sources and retrieval scores</h3>
    <ul>${sources.map((s) => {
      const [, path, start, end] = /^(.*):(\d+)-(\d+)$/.exec(s.citation) || [null, s.citation, 1, 1]
      return html`<li key=${s.citation}>
        <button type="button" class="chip" data-path=${path} data-start=${start} data-end=${end}>${s.citation}</button>
        ${s.symbol ? html`<span class="symbol">${s.symbol}</span>` : ''}
        <span class="score" title="retrieval score">score ${Number(s.score).toFixed(3)}</span>
        ${cited.has(s.citation) ? html`<span class="tag">cited</span>` : ''}
        ${s.relevant === false ? html`<span class="tag">judged not relevant</span>` : ''}
      </li>`
    })}</ul></section>`
}

function Turn({ message, onRegenerate, onCopy }) {
  if (message.role === 'user') {
    return html`<article class="turn user" aria-label="Your question"><div class="who">You</div>
      <div class="bubble">${message.content}</div></article>`
  }
  const finished = message.status !== 'streaming'
  return html`<article class="turn assistant" aria-label="Cairn's answer" aria-busy=${finished ? 'false' : 'true'}>
    <div class="who">Cairn</div>
    <${Steps} answer=${message} />
    <${MarkdownHost} element=${message.element} />
    ${message.status === 'error' ? html`<p class="error" role="alert">${message.error}</p>` : ''}
    ${message.status === 'stopped' ? html`<p class="notice">Stopped.</p>` : ''}
    ${message.notice ? html`<p class="notice">${message.notice}</p>` : ''}
    <${Sources} answer=${message} />
    ${finished ? html`<div class="actions">
      <button type="button" class="copy-answer" onClick=${() => onCopy(message)}>Copy</button>
      ${message.question ? html`<button type="button" class="regenerate" onClick=${() => onRegenerate(message)}>Regenerate</button>` : ''}
    </div>` : ''}
  </article>`
}

function assistantMessage(question) {
  const element = document.createElement('div')
  element.className = 'md-root'
  return { key: nextKey++, role: 'assistant', question, text: '', steps: [], status: 'streaming', element,
    startedAt: performance.now(), answering: false }
}

function restoredMessages(messages, markdown) {
  let question = null
  return messages.map((m) => {
    if (m.role === 'user') { question = m.content; return { key: nextKey++, role: 'user', content: m.content } }
    const message = assistantMessage(question)
    message.status = 'done'
    message.text = m.content
    markdown.renderInto(message.element, m.content)
    return message
  })
}

// ---------------------------------------------------------------- status

function readiness(report) {
  if (report.offline) {
    return { state: 'offline', label: 'Offline', message: `${report.offline} This page checks again every few seconds.` }
  }
  const checks = report.checks || {}
  const problem = (name) => checks[name] && !checks[name].ok ? checks[name] : null
  if (problem('model')) {
    const m = problem('model')
    return { state: 'down', label: 'Model down', message: `The model is not answering: ${m.error}.${m.hint ? ` Hint: ${m.hint}.` : ''}` }
  }
  if (problem('index')) {
    return { state: 'down', label: 'No index', message: `No index is loaded: ${problem('index').error}` }
  }
  if (problem('redis')) {
    const r = problem('redis')
    return { state: 'degraded', label: 'Sessions off', message: `Sessions are unavailable (Redis: ${r.error}). Answers still work, but conversations are not saved.` }
  }
  if (!report.ready) return { state: 'down', label: 'Not ready', message: 'The service is not ready.' }
  return { state: 'ready', label: 'Ready', message: '' }
}

function StatusBadge({ status, report }) {
  const [open, setOpen] = useState(false)
  const checks = report.checks || {}
  return html`<div class="status">
    <button type="button" class=${`badge ${status.state}`} aria-expanded=${open} onClick=${() => setOpen(!open)}
      aria-label=${`Service status: ${status.label}`}><span class="dot" aria-hidden="true"></span>${status.label}</button>
    ${open ? html`<div class="status-details" role="region" aria-label="Service checks"><dl>
      ${Object.entries(checks).map(([name, check]) => html`<dt key=${name}>${name}: ${check.ok ? 'ok' : 'failing'}</dt>
        <dd>${check.error || check.model || check.url || check.path || ''}${check.chunks ? ` (${check.chunks} chunks)` : ''}
        ${check.hint ? html`<br />${check.hint}` : ''}</dd>`)}
      ${report.offline ? html`<dt>service</dt><dd>${report.offline}</dd>` : ''}
    </dl></div>` : ''}
  </div>`
}

// ---------------------------------------------------------------- sessions

function Sidebar({ sessions, titles, current, error, onNew, onOpen, onDelete, onShortcuts }) {
  return html`<nav class="sessions" aria-label="Conversations">
    <button type="button" class="new" onClick=${onNew} title="Ctrl+Shift+O">+ New chat</button>
    <h2 id="sessions-heading">Conversations</h2>
    ${error ? html`<p class="note">${error}</p>` : ''}
    ${!error && !sessions.length ? html`<p class="empty">No conversations yet.</p>` : ''}
    <ul aria-labelledby="sessions-heading">${sessions.map((s) => html`
      <li key=${s.id} aria-current=${s.id === current ? 'true' : 'false'} data-session=${s.id}>
        <button type="button" class="open" onClick=${() => onOpen(s.id)}>
          <span class="title">${titles[s.id] || s.id}</span><span class="when">${ago(s.updated_at)}</span></button>
        <button type="button" class="delete" aria-label=${`Delete conversation ${titles[s.id] || s.id}`}
          onClick=${() => onDelete(s.id)}>✕</button>
      </li>`)}</ul>
    <button type="button" class="shortcuts-button" onClick=${onShortcuts}>Keyboard shortcuts (?)</button>
  </nav>`
}

function Telemetry({ telemetry }) {
  if (!telemetry) return null
  const t = telemetry
  const share = t.context_window ? Math.round((100 * t.context_tokens) / t.context_window) : 0
  const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? '' : 's'}`
  return html`<div class="telemetry" aria-label="Session telemetry">
    <span>${plural(t.message_count, 'message')}</span><span>${plural(t.turns, 'turn')}</span>
    <span title=${`${t.prompt_tokens.toLocaleString()} prompt, ${t.completion_tokens.toLocaleString()} completion`}>${plural(t.total_tokens, 'token')}</span>
    <label title="Tokens of the conversation the next turn will see, against the model's context window">context ${t.context_tokens.toLocaleString()} / ${t.context_window.toLocaleString()} (${share}%)
      <meter min="0" max=${t.context_window} value=${t.context_tokens} high=${t.context_window * 0.8}
        aria-label="Context used"></meter></label>
  </div>`
}

// ---------------------------------------------------------------- chat

function Composer({ streaming, onSend, onStop, inputRef }) {
  const [text, setText] = useState('')
  const submit = (event) => {
    event.preventDefault()
    if (streaming) { onStop(); return }
    const question = text.trim()
    if (!question) return
    onSend(question)
    setText('')
    inputRef.current.style.height = ''
  }
  const keydown = (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault()
      if (!streaming) submit(event)
    }
  }
  const input = (event) => {
    setText(event.target.value)
    event.target.style.height = 'auto'
    event.target.style.height = `${event.target.scrollHeight}px`
  }
  return html`<form class="composer" onSubmit=${submit} data-ready="true">
    <label for="question" class="visually-hidden">Ask about the code</label>
    <textarea id="question" ref=${inputRef} rows="1" value=${text} onInput=${input} onKeyDown=${keydown}
      placeholder="Ask about the code…" aria-describedby="composer-hint"></textarea>
    ${streaming
      ? html`<button type="button" class="stop" onClick=${onStop}>Stop</button>`
      : html`<button type="submit" class="send" disabled=${!text.trim()}>Send</button>`}
    <p class="hint" id="composer-hint">Enter sends · Shift+Enter: new line · ? shortcuts</p>
  </form>`
}

function Hello({ indexInfo, onAsk }) {
  const examples = ['What are the main modules and what does each do?', 'Where are errors handled?',
    'How is the configuration loaded?']
  return html`<div class="hello"><h1>Ask about ${indexInfo ? html`<code>${indexInfo}</code>` : 'your code'}</h1>
    <p>Answers cite <code>path:start-end</code>; click a citation to read the code. The agent's steps show while it works.</p>
    ${examples.map((q) => html`<button type="button" key=${q} onClick=${() => onAsk(q)}>${q}</button>`)}</div>`
}

// ---------------------------------------------------------------- search

function SearchView({ modes, defaultMode, onOpen, hidden }) {
  const [query, setQuery] = useState('')
  const [mode, setMode] = useState(defaultMode || 'hybrid')
  const [k, setK] = useState(8)
  const [path, setPath] = useState('')
  const [language, setLanguage] = useState('')
  const [results, setResults] = useState(null)
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  useEffect(() => { if (defaultMode) setMode(defaultMode) }, [defaultMode])
  const search = async (event) => {
    event.preventDefault()
    if (!query.trim()) return
    const params = new URLSearchParams({ q: query.trim(), mode, k: String(k) })
    for (const glob of path.split(',').map((p) => p.trim()).filter(Boolean)) params.append('path', glob)
    for (const name of language.split(',').map((p) => p.trim()).filter(Boolean)) params.append('language', name)
    setBusy(true)
    setError(null)
    try {
      setResults((await getJSON(`api/search?${params}`)).results)
    } catch (e) {
      setError(e.message)
      setResults(null)
    } finally {
      setBusy(false)
    }
  }
  return html`<section class="search" hidden=${hidden} aria-label="Search the index">
    <form onSubmit=${search} role="search">
      <label class="q">Query<input type="search" value=${query} onInput=${(e) => setQuery(e.target.value)}
        placeholder="where are retries handled" name="q" /></label>
      <label>Mode<select value=${mode} onChange=${(e) => setMode(e.target.value)} name="mode">
        ${(modes.length ? modes : ['hybrid', 'dense', 'keyword']).map((m) => html`<option key=${m} value=${m}>${m}</option>`)}
      </select></label>
      <label>Results<input type="number" min="1" max="50" value=${k} onInput=${(e) => setK(e.target.value)} name="k" size="3" /></label>
      <label>Path glob<input value=${path} onInput=${(e) => setPath(e.target.value)} placeholder="src/**" name="path" size="10" /></label>
      <label>Language<input value=${language} onInput=${(e) => setLanguage(e.target.value)} placeholder="python" name="language" size="8" /></label>
      <button type="submit" disabled=${busy}>${busy ? 'Searching…' : 'Search'}</button>
    </form>
    ${error ? html`<p class="error" role="alert">${error}</p>` : ''}
    ${results && !results.length ? html`<p class="notice">Nothing found.</p>` : ''}
    ${results ? html`<ol class="results" aria-label="Search results">${results.map((r) => html`<li key=${r.citation}>
      <button type="button" class="result" onClick=${() => onOpen({ path: r.path, start: r.start_line, end: r.end_line })}>
        <span class="where">${r.path}:${r.start_line}-${r.end_line}</span>
        <span class="meta"><span>${r.symbol || r.kind || r.language}</span><span>${r.language}</span>
          <span class="score">${mode} score ${r.score.toFixed(4)}</span><span>rank ${r.rank}</span></span>
      </button><pre><code>${r.snippet}</code></pre></li>`)}</ol>` : ''}
  </section>`
}

// ---------------------------------------------------------------- the code panel

function CodePanel({ target, onClose, onCopied }) {
  const [file, setFile] = useState(null)
  const [error, setError] = useState(null)
  const bodyRef = useRef()
  useEffect(() => loadStylesheet('static/vendor/pygments/code.css'), [])
  useEffect(() => {
    let live = true
    setFile(null)
    setError(null)
    const params = new URLSearchParams({ start: target.start, end: target.end, context: CONTEXT_LINES })
    getJSON(`api/files/${encodePath(target.path)}?${params}`)
      .then((data) => live && setFile(data))
      .catch((e) => live && setError(e.message))
    return () => { live = false }
  }, [target.path, target.start, target.end])
  useEffect(() => {
    const first = bodyRef.current?.querySelector('.line.cited')
    if (first) first.scrollIntoView({ block: 'center' })
  }, [file])
  const cite = `${target.path}:${target.start}-${target.end}`
  return html`<aside class="panel" aria-label="Code">
    <div class="panel-head"><h2 title=${cite}>${cite}</h2>
      <button type="button" class="copy-cite" onClick=${() => copyText(cite).then(onCopied)}>Copy path:lines</button>
      <button type="button" class="close" aria-label="Close the code panel" onClick=${onClose}>✕</button></div>
    ${file ? html`<div class="panel-meta">${file.language} · ${file.total_lines} lines${file.truncated ? ' · range cut to 400 lines' : ''}</div>` : ''}
    <div class="panel-body" ref=${bodyRef}>
      ${error ? html`<p class="error" role="alert">${error}</p>` : ''}
      ${!file && !error ? html`<p class="notice">Loading…</p>` : ''}
      ${file ? html`<pre class="code-view" tabindex="0" aria-label=${`${file.path}, lines ${file.lines[0]?.number}-${file.lines.at(-1)?.number}`}><code>${file.lines.map((line) => html`<span key=${line.number}
        class=${line.cited ? 'line cited' : 'line'} data-line=${line.number}><span class="ln">${line.number}</span><span class="lc"
        dangerouslySetInnerHTML=${{ __html: line.html }}></span>
</span>`)}</code></pre>` : ''}
    </div></aside>`
}

// ---------------------------------------------------------------- dialogs

function KeyDialog({ request, onDone }) {
  const ref = useRef()
  const [value, setValue] = useState('')
  useEffect(() => { if (request && !ref.current.open) ref.current.showModal() }, [request])
  const close = (key) => { ref.current.close(); setValue(''); onDone(key) }
  return html`<dialog ref=${ref} class="key-dialog" aria-labelledby="key-title" onCancel=${() => close(null)}>
    <form method="dialog" onSubmit=${(e) => { e.preventDefault(); close(value) }}>
      <h2 id="key-title">API key</h2>
      <p>${request?.reason} Cairn keeps it in this browser (localStorage) and sends it as <code>Authorization: Bearer</code>.</p>
      <label for="api-key">Key</label>
      <input id="api-key" type="password" autocomplete="off" value=${value} onInput=${(e) => setValue(e.target.value)} />
      <menu><button type="button" onClick=${() => close(null)}>Cancel</button>
        <button type="submit" class="primary">Use this key</button></menu>
    </form></dialog>`
}

const SHORTCUTS = [
  ['Ctrl / ⌘ + Shift + O', 'New chat'], ['Shift + Esc or /', 'Focus the question box'],
  ['Ctrl / ⌘ + Shift + ;', 'Copy the last code block'], ['Enter / Shift + Enter', 'Send / new line'],
  ['Esc', 'Close the code panel'], ['?', 'These shortcuts'],
]

function ShortcutsDialog({ open, onClose }) {
  const ref = useRef()
  useEffect(() => {
    if (open && !ref.current.open) ref.current.showModal()
    if (!open && ref.current.open) ref.current.close()
  }, [open])
  return html`<dialog ref=${ref} aria-labelledby="shortcuts-title" onClose=${onClose}>
    <h2 id="shortcuts-title">Keyboard shortcuts</h2>
    <table><tbody>${SHORTCUTS.map(([keys, what]) => html`<tr key=${keys}><td><kbd>${keys}</kbd></td><td>${what}</td></tr>`)}</tbody></table>
    <menu><button type="button" class="primary" onClick=${onClose}>Close</button></menu></dialog>`
}

// ---------------------------------------------------------------- the page

function App() {
  const [tab, setTab] = useState('chat')
  const [sessionId, setSessionId] = useState(() => sessionFromHash() || newSessionId())
  const [messages, setMessages] = useState([])
  const [, setTick] = useState(0)
  const [streaming, setStreaming] = useState(false)
  const [sessions, setSessions] = useState([])
  const [sessionsError, setSessionsError] = useState(null)
  const [titles, setTitles] = useState(loadTitles)
  const [telemetry, setTelemetry] = useState(null)
  const [report, setReport] = useState({ checks: {} })
  const [status, setStatus] = useState({ state: 'checking', label: 'Checking…', message: '' })
  const [panel, setPanel] = useState(null)
  const [keyRequest, setKeyRequest] = useState(null)
  const [shortcuts, setShortcuts] = useState(false)
  const [toast, setToast] = useState(null)
  const [retrievers, setRetrievers] = useState({ modes: [], default: 'hybrid' })
  const inputRef = useRef()
  const abortRef = useRef(null)
  const stickRef = useRef(true)
  const scrollRef = useRef()
  const contentRef = useRef()
  const sessionRef = useRef(sessionId)
  const statelessRef = useRef(false)
  sessionRef.current = sessionId

  const update = useCallback(() => setTick((n) => n + 1), [])
  const say = useCallback((text) => {
    setToast(text)
    clearTimeout(say.timer)
    say.timer = setTimeout(() => setToast(null), 1600)
  }, [])

  // -- API key: the api module asks through this dialog when a request gets 401
  useEffect(() => onKeyNeeded((reason) => new Promise((resolve) => setKeyRequest({ reason, resolve }))), [])

  // -- status: /ready now, then every 15 s (every 4 s while something is down)
  const checkReady = useCallback(async () => {
    let next
    try {
      const response = await api('ready')
      next = await response.json()
    } catch (error) {
      next = { offline: error instanceof ApiError ? error.message : String(error), checks: {} }
    }
    setReport(next)
    setStatus(readiness(next))
    return next
  }, [])
  useEffect(() => {
    let timer
    const loop = async () => {
      const next = await checkReady()
      timer = setTimeout(loop, readiness(next).state === 'ready' ? 15000 : 4000)
    }
    loop()
    return () => clearTimeout(timer)
  }, [])

  const loadSessions = useCallback(async () => {
    try {
      const list = (await getJSON('sessions?limit=100')).sessions
      setSessions(list)
      setSessionsError(null)
      fillTitles(list)
    } catch (error) {
      setSessionsError(error.status === 503 ? 'Sessions are unavailable (Redis is down).' : error.message)
    }
  }, [])

  // sessions started elsewhere (the API, another browser) get their first question as title, fetched lazily
  const fillTitles = async (list) => {
    const known = loadTitles()
    for (const s of list.filter((s) => !known[s.id]).slice(0, 20)) {
      try {
        const detail = await getJSON(`sessions/${encodeURIComponent(s.id)}`)
        const first = detail.messages.find((m) => m.role === 'user')
        if (first) saveTitle(s.id, first.content)
      } catch { /* gone or unreadable: keep its id as title */ }
    }
    setTitles(loadTitles())
  }

  const loadTelemetry = useCallback(async (id) => {
    try {
      const detail = await getJSON(`sessions/${encodeURIComponent(id)}`)
      if (sessionRef.current === id) setTelemetry(detail.telemetry)
      return detail
    } catch {
      return null
    }
  }, [])

  const openSession = useCallback(async (id) => {
    abortRef.current?.abort()
    setSessionId(id)
    sessionRef.current = id
    history.replaceState(null, '', `#session=${encodeURIComponent(id)}`)
    setMessages([])
    setTelemetry(null)
    setTab('chat')
    const detail = await loadTelemetry(id)
    if (!detail || sessionRef.current !== id) return
    const markdown = await markdownReady
    setMessages(restoredMessages(detail.messages, markdown))
  }, [])

  const newChat = useCallback(() => {
    abortRef.current?.abort()
    const id = newSessionId()
    setSessionId(id)
    sessionRef.current = id
    history.replaceState(null, '', location.pathname + location.search)
    setMessages([])
    setTelemetry(null)
    setTab('chat')
    setTimeout(() => inputRef.current?.focus(), 0)
  }, [])

  const deleteSession = useCallback(async (id) => {
    const title = loadTitles()[id] || id
    if (!confirm(`Delete the conversation "${title}"? Its messages are removed from the server.`)) return
    try {
      const response = await api(`sessions/${encodeURIComponent(id)}`, { method: 'DELETE' })
      if (!response.ok && response.status !== 404) throw await errorOf(response)
      forgetTitle(id)
      setTitles(loadTitles())
      if (id === sessionRef.current) newChat()
      say('Conversation deleted')
    } catch (error) {
      say(`Could not delete: ${error.message}`)
    }
    loadSessions()
  }, [])

  // -- first load: the conversation in the address, the list of sessions, the retrievers
  useEffect(() => {
    const fromHash = sessionFromHash()
    if (fromHash) openSession(fromHash)
    loadSessions()
    getJSON('api/retrievers').then(setRetrievers).catch(() => {})
  }, [])
  // the question box is in the document and takes input from here on
  useLayoutEffect(() => {
    performance.mark('cairn-interactive')
    document.documentElement.dataset.ready = 'true'
  }, [])

  // -- follow the answer as it grows, unless the reader scrolled up
  useEffect(() => {
    const box = scrollRef.current
    const onScroll = () => { stickRef.current = box.scrollHeight - box.scrollTop - box.clientHeight < 80 }
    box.addEventListener('scroll', onScroll, { passive: true })
    const observer = new ResizeObserver(() => { if (stickRef.current) box.scrollTop = box.scrollHeight })
    observer.observe(contentRef.current)
    return () => { box.removeEventListener('scroll', onScroll); observer.disconnect() }
  }, [])

  const streamAnswer = async (answer, question, earlier, signal) => {
    const headers = { 'Content-Type': 'application/json', 'X-Cairn-Events': '1' }
    const body = { model: 'cairn-agent', stream: true, messages: [{ role: 'user', content: question }] }
    if (statelessRef.current) body.messages = [...earlier, ...body.messages]
    else headers['X-Session-Id'] = sessionRef.current
    let response = await api('v1/chat/completions', { method: 'POST', headers, body: JSON.stringify(body), signal })
    if (!response.ok) {
      const error = await errorOf(response)
      if (error.code !== 'session_store_unavailable') throw error
      // Redis is down: answer without a session, sending the conversation so far
      statelessRef.current = true
      answer.notice = 'Sessions are unavailable, so this conversation is not being saved.'
      delete headers['X-Session-Id']
      body.messages = [...earlier, ...body.messages]
      response = await api('v1/chat/completions', { method: 'POST', headers, body: JSON.stringify(body), signal })
      if (!response.ok) throw await errorOf(response)
    }
    const markdown = await markdownReady
    answer.renderer = new markdown.StreamingMarkdown(answer.element)
    let slice = performance.now()
    for await (const { event, data } of serverEvents(response.body)) {
      // Events that arrived together are handed over in one go, as promise callbacks that would
      // otherwise run as one task: yield to the browser every few milliseconds so it can paint.
      if (performance.now() - slice > 8) { await nextTask(); slice = performance.now() }
      if (event === 'cairn.step') { applyStep(answer, JSON.parse(data)); update(); continue }
      if (data === '[DONE]') break
      const chunk = JSON.parse(data)
      if (chunk.error) throw new ApiError(chunk.error.message, 500, chunk.error.code)
      const choice = chunk.choices?.[0]
      const delta = choice?.delta?.content
      if (delta) {
        if (!answer.answering) { answer.answering = true; answer.answeredAt = performance.now(); update() }
        answer.text += delta
        answer.renderer.append(delta)
      }
      if (chunk.cairn) answer.cairn = chunk.cairn
    }
    answer.status = 'done'
  }

  const send = useCallback(async (question) => {
    if (abortRef.current) return
    const earlier = messages.filter((m) => m.role === 'user' || m.status === 'done')
      .map((m) => ({ role: m.role, content: m.role === 'user' ? m.content : m.text }))
    const user = { key: nextKey++, role: 'user', content: question }
    const answer = assistantMessage(question)
    setMessages((list) => [...list, user, answer])
    const id = sessionRef.current
    if (!loadTitles()[id]) { saveTitle(id, question); setTitles(loadTitles()) }
    history.replaceState(null, '', `#session=${encodeURIComponent(id)}`)
    const controller = new AbortController()
    abortRef.current = controller
    stickRef.current = true
    setStreaming(true)
    try {
      await streamAnswer(answer, question, earlier, controller.signal)
    } catch (error) {
      if (error.name === 'AbortError') {
        answer.status = 'stopped'
      } else {
        answer.status = 'error'
        answer.error = error.message
        checkReady()
      }
    } finally {
      answer.shown = answer.renderer ? answer.renderer.finish({ withoutSources: !!answer.cairn?.sources?.length }) : answer.text
      if (!answer.answeredAt) answer.answeredAt = performance.now()
      abortRef.current = null
      setStreaming(false)
      update()
      if (sessionRef.current === id && !statelessRef.current) { loadTelemetry(id); loadSessions() }
    }
  }, [messages])

  const stop = useCallback(() => abortRef.current?.abort(), [])
  const regenerate = useCallback((answer) => answer.question && send(answer.question), [send])
  const copyAnswer = useCallback((answer) => copyText(answer.shown ?? answer.text).then(() => say('Answer copied')), [])

  const copyLastCode = useCallback(() => {
    const blocks = scrollRef.current.querySelectorAll('.codeblock code')
    if (!blocks.length) { say('No code block to copy'); return }
    copyText(blocks[blocks.length - 1].textContent).then(() => say('Code copied'))
  }, [])

  // -- clicks inside answers: citation chips and code blocks' copy buttons (the renderer's HTML)
  useEffect(() => {
    const onClick = (event) => {
      const chip = event.target.closest('.chip')
      if (chip) {
        setPanel({ path: chip.dataset.path, start: Number(chip.dataset.start), end: Number(chip.dataset.end) })
        return
      }
      const copy = event.target.closest('.copy-code')
      if (copy) {
        copyText(copy.closest('.codeblock').querySelector('code').textContent).then(() => {
          copy.textContent = 'Copied'
          setTimeout(() => { copy.textContent = 'Copy' }, 1200)
        })
      }
    }
    scrollRef.current.addEventListener('click', onClick)
    return () => scrollRef.current?.removeEventListener('click', onClick)
  }, [])

  // -- keyboard shortcuts
  useEffect(() => {
    const onKey = (event) => {
      const mod = event.ctrlKey || event.metaKey
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName)
      if (mod && event.shiftKey && event.code === 'KeyO') { event.preventDefault(); newChat() }
      else if (mod && event.shiftKey && event.code === 'Semicolon') { event.preventDefault(); copyLastCode() }
      else if (event.shiftKey && event.key === 'Escape') { event.preventDefault(); setTab('chat'); inputRef.current?.focus() }
      else if (event.key === 'Escape' && !document.querySelector('dialog[open]')) setPanel(null)
      else if (!typing && !mod && event.key === '/') { event.preventDefault(); setTab('chat'); inputRef.current?.focus() }
      else if (!typing && !mod && event.key === '?') setShortcuts(true)
    }
    document.addEventListener('keydown', onKey)
    return () => document.removeEventListener('keydown', onKey)
  }, [])

  useEffect(() => {
    const first = messages.find((m) => m.role === 'user')
    document.title = first ? `${first.content.slice(0, 50)} · Cairn` : 'Cairn'
  }, [messages.length])

  const indexCheck = report.checks?.index
  const indexInfo = indexCheck?.ok ? `${String(indexCheck.path).split('/').slice(-2).join('/')} (${indexCheck.chunks} chunks)` : null
  return html`<div class=${panel ? 'layout with-panel' : 'layout'}>
    <header class="top">
      <span class="brand"><svg viewBox="0 0 32 32" aria-hidden="true"><g fill="currentColor" opacity=".75"><ellipse cx="16" cy="27" rx="12" ry="4"/><ellipse cx="16" cy="19" rx="9" ry="3.6"/><ellipse cx="16" cy="12" rx="6.5" ry="3.2"/><ellipse cx="16" cy="6" rx="4" ry="2.6"/></g></svg>Cairn</span>
      <span class="index-info" title=${indexCheck?.ok ? `index ${indexCheck.path}, generation ${indexCheck.generation}` : ''}>${indexInfo || ''}</span>
      <span class="spacer"></span>
      <div class="tabs" role="tablist" aria-label="View">
        <button type="button" role="tab" id="tab-chat" aria-controls="view-chat" aria-selected=${tab === 'chat'} onClick=${() => setTab('chat')}>Chat</button>
        <button type="button" role="tab" id="tab-search" aria-controls="view-search" aria-selected=${tab === 'search'} onClick=${() => setTab('search')}>Search</button>
      </div>
      <${StatusBadge} status=${status} report=${report} />
    </header>
    ${status.message ? html`<p class=${status.state === 'degraded' ? 'banner warn' : 'banner'} role="alert">${status.message}</p>` : ''}
    <${Sidebar} sessions=${sessions} titles=${titles} current=${sessionId} error=${sessionsError}
      onNew=${newChat} onOpen=${openSession} onDelete=${deleteSession} onShortcuts=${() => setShortcuts(true)} />
    <main>
      <div id="view-chat" role="tabpanel" aria-labelledby="tab-chat" hidden=${tab !== 'chat'} class="chat-view">
        <${Telemetry} telemetry=${telemetry} />
        <div class="conversation" ref=${scrollRef} role="log" aria-label="Conversation" tabindex="0">
          <div ref=${contentRef}>
            ${messages.length ? messages.map((m) => html`<${Turn} key=${m.key} message=${m} onRegenerate=${regenerate} onCopy=${copyAnswer} />`)
              : html`<${Hello} indexInfo=${indexCheck?.ok ? indexCheck.path : null} onAsk=${send} />`}
          </div>
        </div>
        <${Composer} streaming=${streaming} onSend=${send} onStop=${stop} inputRef=${inputRef} />
      </div>
      <div id="view-search" role="tabpanel" aria-labelledby="tab-search" hidden=${tab !== 'search'} class="search-view">
        <${SearchView} modes=${retrievers.modes} defaultMode=${retrievers.default} onOpen=${setPanel} hidden=${tab !== 'search'} />
      </div>
    </main>
    ${panel ? html`<${CodePanel} target=${panel} onClose=${() => setPanel(null)} onCopied=${() => say('Copied ' + panel.path)} />` : ''}
    <${KeyDialog} request=${keyRequest} onDone=${(key) => { keyRequest?.resolve(key); setKeyRequest(null) }} />
    <${ShortcutsDialog} open=${shortcuts} onClose=${() => setShortcuts(false)} />
    ${toast ? html`<div class="toast" role="status">${toast}</div>` : ''}
  </div>`
}

render(html`<${App} />`, document.getElementById('app'))
