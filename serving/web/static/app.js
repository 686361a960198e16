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

// The repository a question is about: '' the service's default (model cairn-agent), a name, or '*' (all).
function modelOf(scope) { return scope ? `cairn/${scope}` : 'cairn-agent' }
function withRepo(params, scope) { if (scope) params.set('repo', scope); return params }
function scopeName(scope) { return scope === '*' ? 'all repositories' : scope }

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

// What the history policy did to fit the conversation, when it cut anything (graphs/agent/budget.py).
function historyNote(h) {
  if (!h || !(h.summarised || h.dropped || h.clipped)) return ''
  const parts = [h.summarised && `${h.summarised} older summarised`, h.dropped && `${h.dropped} left out`].filter(Boolean)
  return ` · earlier conversation: last ${h.verbatim} word for word${h.clipped ? ' (cut)' : ''}${parts.length ? ', ' + parts.join(', ') : ''}`
}

function describeDone(step, running) {
  switch (step.node) {
    case 'plan': return (step.queries?.length ? `Planned ${quoted(step.queries)}` : running) + historyNote(step.history)
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

function SessionItem({ s, title, current, showRepo, onOpen, onDelete }) {
  return html`<li aria-current=${s.id === current ? 'true' : 'false'} data-session=${s.id}>
    <button type="button" class="open" onClick=${() => onOpen(s.id)}>
      <span class="title">${title}</span>
      <span class="when">${ago(s.updated_at)}${showRepo && s.repo ? html` · <span class="repo">${scopeName(s.repo)}</span>` : ''}</span>
      ${s.snippet ? html`<span class="snippet">${s.snippet}</span>` : ''}</button>
    <button type="button" class="delete" aria-label=${`Delete conversation ${title}`} onClick=${() => onDelete(s.id)}>✕</button>
  </li>`
}

function Sidebar({ sessions, titles, current, error, showRepo, onNew, onOpen, onDelete, onShortcuts }) {
  const [query, setQuery] = useState('')
  const [found, setFound] = useState(null)
  const [searchError, setSearchError] = useState(null)
  useEffect(() => {
    const q = query.trim()
    if (!q) { setFound(null); setSearchError(null); return }
    let live = true
    const timer = setTimeout(async () => {
      try {
        const list = (await getJSON(`sessions?${new URLSearchParams({ q, limit: '50' })}`)).sessions
        if (live) { setFound(list); setSearchError(null) }
      } catch (e) { if (live) setSearchError(e.message) }
    }, 400)
    return () => { live = false; clearTimeout(timer) }
  }, [query])
  const shown = found ?? sessions
  const titleOf = (s) => s.title || titles[s.id] || s.id
  return html`<nav class="sessions" aria-label="Conversations">
    <button type="button" class="new" onClick=${onNew} title="Ctrl+Shift+O">+ New chat</button>
    <h2 id="sessions-heading">Conversations</h2>
    <div class="find" role="search"><label for="find-sessions" class="visually-hidden">Search conversations</label>
      <input id="find-sessions" type="search" placeholder="Search conversations" value=${query}
        onInput=${(e) => setQuery(e.target.value)} /></div>
    ${error ? html`<p class="note">${error}</p>` : ''}
    ${searchError ? html`<p class="note">${searchError}</p>` : ''}
    ${!error && !shown.length ? html`<p class="empty">${found ? 'No conversation mentions that.' : 'No conversations yet.'}</p>` : ''}
    <ul aria-labelledby="sessions-heading">${shown.map((s) => html`<${SessionItem} key=${s.id} s=${s} title=${titleOf(s)}
      current=${current} showRepo=${showRepo} onOpen=${onOpen} onDelete=${onDelete} />`)}</ul>
    <button type="button" class="shortcuts-button" onClick=${onShortcuts}>Keyboard shortcuts (?)</button>
  </nav>`
}

function RepoPicker({ repositories, scope, onPick }) {
  const named = repositories.filter((r) => r.name)
  if (named.length < 2) return null
  return html`<label class="repo-picker">Repository
    <select value=${scope} onChange=${(e) => onPick(e.target.value)}>
      <option value="*">All repositories</option>
      ${named.map((r) => html`<option key=${r.name} value=${r.name} disabled=${!r.ok}>${r.name}${r.ok ? '' : ' (cannot serve)'}</option>`)}
    </select></label>`
}

function Telemetry({ telemetry }) {
  if (!telemetry) return null
  const t = telemetry
  const h = t.history || {}
  const budget = h.budget || t.context_window
  const share = budget ? Math.round((100 * t.context_tokens) / budget) : 0
  const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? '' : 's'}`
  const cut = h.summarised || h.dropped || h.clipped
  return html`<div class="telemetry" aria-label="Session telemetry">
    <span>${plural(t.message_count, 'message')}</span><span>${plural(t.turns, 'turn')}</span>
    <span title=${`${t.prompt_tokens.toLocaleString()} prompt, ${t.completion_tokens.toLocaleString()} completion`}>${plural(t.total_tokens, 'token')}</span>
    <label title=${`Tokens of earlier conversation the next turn will send, against the history's share of the model's ${t.context_window.toLocaleString()}-token window`}>history ${t.context_tokens.toLocaleString()} / ${budget.toLocaleString()} (${share}%)
      <meter min="0" max=${budget} value=${t.context_tokens} high=${budget * 0.8}
        aria-label="History used"></meter></label>
    ${cut ? html`<span class="history-note" title="Recent turns are sent word for word; older ones as their question and the code their answer cited; the oldest are left out">${[
      `last ${plural(h.verbatim, 'turn')} word for word${h.clipped ? ' (cut)' : ''}`,
      h.summarised ? `${h.summarised} summarised` : '', h.dropped ? `${h.dropped} left out` : ''].filter(Boolean).join(', ')}</span>` : ''}
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

function SearchView({ modes, defaultMode, scope, onOpen, hidden }) {
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
    const params = withRepo(new URLSearchParams({ q: query.trim(), mode, k: String(k) }), scope)
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
    ${scope ? html`<p class="scope">Searching ${scopeName(scope)}</p>` : ''}
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
      <button type="button" class="result" onClick=${() => onOpen({ path: r.path, start: r.start_line, end: r.end_line, repo: scope })}>
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
    const params = withRepo(new URLSearchParams({ start: target.start, end: target.end, context: CONTEXT_LINES }), target.repo)
    getJSON(`api/files/${encodePath(target.path)}?${params}`)
      .then((data) => live && setFile(data))
      .catch((e) => live && setError(e.message))
    return () => { live = false }
  }, [target.path, target.start, target.end, target.repo])
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

// ---------------------------------------------------------------- the operator's status view

function bytes(n) {
  if (n == null) return '–'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`
}

function ms(value) { return value == null ? '–' : value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms` }

function median(values) {
  if (!values.length) return null
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor((sorted.length - 1) / 2)]
}

function freshnessText(repo) {
  const f = repo.freshness
  if (!repo.ok) return html`<span class="bad">${repo.problem}</span>`
  if (!repo.source_exists) return html`<span class="warn">source folder missing</span>`
  if (repo.watch?.pending) return html`<span class="warn">${repo.watch.pending} change(s) being indexed</span>`
  if (!f) return '–'
  if (f.fresh) return html`<span class="good">up to date</span>`
  const parts = [f.changed && `${f.changed} changed`, f.missing && `${f.missing} deleted`].filter(Boolean)
  return html`<span class="warn">${parts.join(', ')} since the ingest</span>`
}

function StatusView({ hidden }) {
  const [report, setReport] = useState(null)
  const [error, setError] = useState(null)
  useEffect(() => {
    if (hidden) return
    let timer, live = true
    const load = async () => {
      try { const next = await getJSON('api/status'); if (live) { setReport(next); setError(null) } }
      catch (e) { if (live) setError(e.message) }
      if (live) timer = setTimeout(load, 5000)
    }
    load()
    return () => { live = false; clearTimeout(timer) }
  }, [hidden])
  if (hidden) return null
  if (!report) return html`<section class="status-view" aria-label="Service status" tabindex="0">${error ? html`<p class="error" role="alert">${error}</p>` : html`<p class="notice">Loading…</p>`}</section>`
  const { model, redis, replica } = report
  const answers = report.requests.filter((r) => r.ttft_ms != null)
  const state = (check) => check.ok ? html`<span class="good">ok</span>` : html`<span class="bad">failing</span>`
  return html`<section class="status-view" aria-label="Service status" tabindex="0">
    ${error ? html`<p class="error" role="alert">${error}</p>` : ''}
    <h2>Repositories</h2>
    <div class="table-wrap"><table><thead><tr><th scope="col">Name</th><th scope="col">Chunks</th><th scope="col">Files</th>
      <th scope="col">Index size</th><th scope="col">Last ingest</th><th scope="col">Freshness</th><th scope="col">Source</th></tr></thead>
      <tbody>${report.repositories.map((r) => html`<tr key=${r.name}>
        <th scope="row">${r.name || '(the index)'}${r.default ? ' · default' : ''}</th>
        <td class="num">${r.chunks?.toLocaleString() ?? '–'}</td><td class="num">${r.files?.toLocaleString() ?? '–'}</td>
        <td class="num">${bytes(r.size_bytes)}</td>
        <td>${r.last_ingest ? html`<time datetime=${r.last_ingest}>${ago(Date.parse(r.last_ingest) / 1000)}</time>` : '–'}</td>
        <td>${freshnessText(r)}</td><td class="path source" title=${r.source || ''}>${r.source || '–'}</td></tr>`)}</tbody></table></div>
    <div class="cards">
      <div class="card"><h2>Model</h2><dl>
        <dt>State</dt><dd>${state(model)}${model.warning ? html` · <span class="warn">${model.warning}</span>` : ''}</dd>
        <dt>Model</dt><dd>${model.model || '–'}</dd><dt>Endpoint</dt><dd class="path">${model.endpoint || '–'}</dd>
        <dt>One-token probe</dt><dd>${ms(model.ms)}</dd>
        <dt>First token (median of ${answers.length})</dt><dd>${ms(median(answers.map((r) => r.ttft_ms)))}</dd>
        ${model.error ? html`<dt>Error</dt><dd class="bad">${model.error}${model.hint ? html`<br />${model.hint}` : ''}</dd>` : ''}</dl></div>
      <div class="card"><h2>Sessions (Redis)</h2><dl>
        <dt>State</dt><dd>${state(redis)}</dd><dt>Where</dt><dd class="path">${redis.url || '–'}${redis.mode ? ` (${redis.mode})` : ''}</dd>
        ${redis.error ? html`<dt>Error</dt><dd class="bad">${redis.error}</dd>` : ''}</dl></div>
      <div class="card"><h2>This worker</h2><dl>
        <dt>Process</dt><dd>${replica.host} · pid ${replica.pid} · ${replica.workers} worker(s)</dd>
        <dt>Started</dt><dd>${ago(replica.started_at)}</dd><dt>Answering now</dt><dd>${report.running}</dd>
        <dt>Version</dt><dd>${replica.version}</dd></dl></div>
    </div>
    <h2>Recent requests</h2>
    ${report.requests.length ? html`<div class="table-wrap"><table><thead><tr><th scope="col">When</th><th scope="col">Request</th>
      <th scope="col">Status</th><th scope="col">Time</th><th scope="col">First token</th><th scope="col">Model</th></tr></thead>
      <tbody>${report.requests.map((r, n) => html`<tr key=${n}><td><time datetime=${new Date(r.at * 1000).toISOString()}>${new Date(r.at * 1000).toLocaleTimeString()}</time></td><td class="path">${r.method} ${r.route}</td>
        <td class=${r.status >= 500 ? 'bad' : r.status >= 400 ? 'warn' : ''}>${r.status}</td><td class="num">${ms(r.ms)}</td>
        <td class="num">${ms(r.ttft_ms)}</td><td>${r.model || ''}</td></tr>`)}</tbody></table></div>`
      : html`<p class="notice">No requests yet.</p>`}
  </section>`
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
  const [repositories, setRepositories] = useState([])
  const [scope, setScope] = useState('')
  const inputRef = useRef()
  const abortRef = useRef(null)
  const stickRef = useRef(true)
  const scrollRef = useRef()
  const contentRef = useRef()
  const sessionRef = useRef(sessionId)
  const statelessRef = useRef(false)
  const scopeRef = useRef(scope)
  const reposRef = useRef(repositories)
  const sessionsRef = useRef(sessions)
  sessionsRef.current = sessions
  reposRef.current = repositories
  sessionRef.current = sessionId
  scopeRef.current = scope

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
      setSessions(list)  // each titled by the service with its first question
      setSessionsError(null)
    } catch (error) {
      setSessionsError(error.status === 503 ? 'Sessions are unavailable (Redis is down).' : error.message)
    }
  }, [])

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
    // its repository (a name or *; a service on one index folder records the folder, which is no choice)
    if (detail.repo && !detail.repo.includes('/')) setScope(detail.repo)
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
    const title = sessionsRef.current.find((s) => s.id === id)?.title || loadTitles()[id] || id
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
    getJSON('api/repositories').then(({ repositories: list }) => {
      setRepositories(list)
      reposRef.current = list
      const named = list.filter((r) => r.name)
      // several repositories: the service's default one, else all of them; a conversation opened says its own
      if (named.length > 1 && !sessionFromHash()) setScope(named.find((r) => r.default)?.name || '*')
    }).catch(() => {})
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
    const body = { model: modelOf(scopeRef.current), stream: true, messages: [{ role: 'user', content: question }] }
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
  const pickScope = useCallback((next) => {
    if (next === scopeRef.current) return
    const started = messages.length > 0
    if (started) newChat()
    setScope(next)
    scopeRef.current = next
    say(started ? `New chat about ${scopeName(next)}` : `Asking about ${scopeName(next)}`)
  }, [messages])
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
        setPanel({ path: chip.dataset.path, start: Number(chip.dataset.start), end: Number(chip.dataset.end), repo: scopeRef.current })
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
  const named = repositories.filter((r) => r.name)
  const picked = named.find((r) => r.name === scope)
  const indexInfo = named.length > 1 ? (picked ? `${picked.chunks?.toLocaleString()} chunks` : `${named.length} repositories`)
    : indexCheck?.ok && indexCheck.path ? `${String(indexCheck.path).split('/').slice(-2).join('/')} (${indexCheck.chunks} chunks)`
    : indexCheck?.ok ? `${indexCheck.repo} (${indexCheck.chunks} chunks)` : null
  return html`<div class=${panel ? 'layout with-panel' : 'layout'}>
    <header class="top">
      <span class="brand"><svg viewBox="0 0 32 32" aria-hidden="true"><g fill="currentColor" opacity=".75"><ellipse cx="16" cy="27" rx="12" ry="4"/><ellipse cx="16" cy="19" rx="9" ry="3.6"/><ellipse cx="16" cy="12" rx="6.5" ry="3.2"/><ellipse cx="16" cy="6" rx="4" ry="2.6"/></g></svg>Cairn</span>
      <${RepoPicker} repositories=${repositories} scope=${scope} onPick=${pickScope} />
      <span class="index-info" title=${indexCheck?.ok ? `index ${indexCheck.path}, generation ${indexCheck.generation}` : ''}>${indexInfo || ''}</span>
      <span class="spacer"></span>
      <div class="tabs" role="tablist" aria-label="View">
        <button type="button" role="tab" id="tab-chat" aria-controls="view-chat" aria-selected=${tab === 'chat'} onClick=${() => setTab('chat')}>Chat</button>
        <button type="button" role="tab" id="tab-search" aria-controls="view-search" aria-selected=${tab === 'search'} onClick=${() => setTab('search')}>Search</button>
        <button type="button" role="tab" id="tab-status" aria-controls="view-status" aria-selected=${tab === 'status'} onClick=${() => setTab('status')}>Status</button>
      </div>
      <${StatusBadge} status=${status} report=${report} />
    </header>
    ${status.message ? html`<p class=${status.state === 'degraded' ? 'banner warn' : 'banner'} role="alert">${status.message}</p>` : ''}
    <${Sidebar} sessions=${sessions} titles=${titles} current=${sessionId} error=${sessionsError} showRepo=${named.length > 1}
      onNew=${newChat} onOpen=${openSession} onDelete=${deleteSession} onShortcuts=${() => setShortcuts(true)} />
    <main>
      <div id="view-chat" role="tabpanel" aria-labelledby="tab-chat" hidden=${tab !== 'chat'} class="chat-view">
        <${Telemetry} telemetry=${telemetry} />
        <div class="conversation" ref=${scrollRef} role="log" aria-label="Conversation" tabindex="0">
          <div ref=${contentRef}>
            ${messages.length ? messages.map((m) => html`<${Turn} key=${m.key} message=${m} onRegenerate=${regenerate} onCopy=${copyAnswer} />`)
              : html`<${Hello} indexInfo=${named.length > 1 ? scopeName(scope || '*') : indexCheck?.ok ? indexCheck.path || indexCheck.repo : null} onAsk=${send} />`}
          </div>
        </div>
        <${Composer} streaming=${streaming} onSend=${send} onStop=${stop} inputRef=${inputRef} />
      </div>
      <div id="view-search" role="tabpanel" aria-labelledby="tab-search" hidden=${tab !== 'search'} class="search-view">
        <${SearchView} modes=${retrievers.modes} defaultMode=${retrievers.default} scope=${scope} onOpen=${setPanel} hidden=${tab !== 'search'} />
      </div>
      <div id="view-status" role="tabpanel" aria-labelledby="tab-status" hidden=${tab !== 'status'} class="search-view">
        <${StatusView} hidden=${tab !== 'status'} />
      </div>
    </main>
    ${panel ? html`<${CodePanel} target=${panel} onClose=${() => setPanel(null)} onCopied=${() => say('Copied ' + panel.path)} />` : ''}
    <${KeyDialog} request=${keyRequest} onDone=${(key) => { keyRequest?.resolve(key); setKeyRequest(null) }} />
    <${ShortcutsDialog} open=${shortcuts} onClose=${() => setShortcuts(false)} />
    ${toast ? html`<div class="toast" role="status">${toast}</div>` : ''}
  </div>`
}

render(html`<${App} />`, document.getElementById('app'))
