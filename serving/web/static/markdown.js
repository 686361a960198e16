// Answers as Markdown: rendered with marked, sanitised with DOMPurify, citations turned into chips,
// code blocks labelled, copyable and highlighted (highlight.js, loaded the first time one shows).
// A streamed answer is rendered a block at a time, once per animation frame: finished blocks are
// parsed once and kept, only the block still being written is parsed again, so a long answer costs
// the same per token at its end as at its start.

import { Marked } from './vendor/marked/marked.esm.js'
import './vendor/dompurify/purify.min.js'
import { loadStylesheet } from './stylesheets.js'

const DOMPurify = globalThis.DOMPurify

// path:start-end as the agent cites it (graphs/agent/citations.py: CITATION), with its brackets.
const CITATION = /[[(]?((?:[\w.-]+\/)*[\w.-]+\.[A-Za-z0-9_]+|(?:[\w.-]+\/)+[\w.-]+):(\d+)(?:\s*[-–]\s*(\d+))?[\])]?/g
const FENCE = /^ {0,3}(`{3,}|~{3,})/
const LIST_ITEM = /^ {0,3}([-*+]|\d{1,9}[.)])(\s|$)/
const SOURCES_HEADING = 'Sources:'
// Nothing in an answer may make the browser fetch anything: no images, media, frames, forms or styles.
const SANITIZE = {
  FORBID_TAGS: ['style', 'img', 'picture', 'source', 'video', 'audio', 'track', 'iframe', 'frame', 'object',
    'embed', 'form', 'input', 'textarea', 'select', 'link', 'meta', 'base', 'svg', 'math', 'template'],
  FORBID_ATTR: ['style', 'srcset', 'src', 'action', 'formaction', 'background', 'poster', 'ping', 'xlink:href'],
}
// The grammars vendored (serving/web/vendor.py: HIGHLIGHT_LANGUAGES), other names answers use for them,
// and the ones tried on a block that names no language.
const LANGUAGES = new Set(['python', 'javascript', 'typescript', 'go', 'rust', 'java', 'kotlin', 'scala', 'c', 'cpp',
  'csharp', 'ruby', 'php', 'swift', 'lua', 'bash', 'shell', 'json', 'yaml', 'markdown', 'xml', 'css', 'sql', 'ini',
  'diff', 'plaintext', 'dockerfile', 'makefile'])
const ALIASES = { py: 'python', python3: 'python', js: 'javascript', jsx: 'javascript', mjs: 'javascript',
  node: 'javascript', ts: 'typescript', tsx: 'typescript', golang: 'go', rs: 'rust', kt: 'kotlin', h: 'c',
  'c++': 'cpp', cc: 'cpp', hpp: 'cpp', cs: 'csharp', 'c#': 'csharp', rb: 'ruby', sh: 'bash', zsh: 'bash',
  console: 'shell', yml: 'yaml', md: 'markdown', html: 'xml', svg: 'xml', toml: 'ini', patch: 'diff',
  text: 'plaintext', txt: 'plaintext', docker: 'dockerfile', make: 'makefile', jsonc: 'json' }
const GUESSES = ['python', 'javascript', 'typescript', 'bash', 'json', 'yaml']
// Longer blocks that name no language are left plain: guessing means running every grammar over them.
const MAX_GUESS_CHARS = 4000
// Text of finished blocks rendered per animation frame; a burst of tokens is caught up over a few frames.
const FRAME_BUDGET_CHARS = 3000

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.getAttribute('href')) {
    node.setAttribute('target', '_blank')
    node.setAttribute('rel', 'noopener noreferrer')
  }
})

function escapeHTML(text) {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
}

const markdown = new Marked({
  gfm: true,
  renderer: {
    code({ text, lang }) {
      const language = (lang || '').trim().split(/\s+/)[0].toLowerCase().replace(/[^\w+#.-]/g, '')
      const label = escapeHTML(language || 'text')
      const cls = language ? ` class="language-${escapeHTML(ALIASES[language] || language)}"` : ''
      return `<div class="codeblock"><div class="codebar"><span class="codelang">${label}</span>` +
        `<button type="button" class="copy-code" aria-label="Copy ${label} code">Copy</button></div>` +
        `<pre tabindex="0"><code${cls}>${escapeHTML(text)}</code></pre></div>`
    },
  },
})

/** Return sanitised HTML for Markdown text. */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(markdown.parse(text), SANITIZE)
}

/** Return a citation chip: a button that opens the code panel on path:start-end. */
export function citationChip(path, start, end) {
  const chip = document.createElement('button')
  chip.type = 'button'
  chip.className = 'chip'
  chip.dataset.path = path
  chip.dataset.start = start
  chip.dataset.end = end
  chip.textContent = `${path}:${start}-${end}`
  chip.title = `Open ${path} at lines ${start}-${end}`
  return chip
}

function chipsIn(root) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => node.parentElement.closest('pre, a, button, .chip') ? NodeFilter.FILTER_REJECT
      : NodeFilter.FILTER_ACCEPT,
  })
  const found = []
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    CITATION.lastIndex = 0
    if (CITATION.test(node.data)) found.push(node)
  }
  for (const node of found) {
    const code = node.parentElement.tagName === 'CODE' && node.parentElement.childNodes.length === 1
      ? node.parentElement : null
    const fragment = document.createDocumentFragment()
    let last = 0
    for (const match of node.data.matchAll(CITATION)) {
      fragment.append(node.data.slice(last, match.index))
      fragment.append(citationChip(match[1], Number(match[2]), Number(match[3] || match[2])))
      last = match.index + match[0].length
    }
    fragment.append(node.data.slice(last))
    ;(code && code.textContent.trim() === node.data.trim() ? code : node).replaceWith(fragment)
  }
}

let core = null
const grammars = new Map()
const waiting = []
let draining = false

function hljsCore() {
  if (!core) {
    loadStylesheet('static/vendor/highlight.js/github.min.css', '(prefers-color-scheme: light)')
    loadStylesheet('static/vendor/highlight.js/github-dark.min.css', '(prefers-color-scheme: dark)')
    core = import('./vendor/highlight.js/core.min.js').then((module) => {
      module.default.configure({ ignoreUnescapedHTML: true })
      return module.default
    })
  }
  return core
}

// highlight.js' core with one more grammar registered, each loaded the first time a block needs it
function withGrammar(name) {
  if (!grammars.has(name)) {
    grammars.set(name, Promise.all([hljsCore(), import(`./vendor/highlight.js/languages/${name}.min.js`)])
      .then(([hljs, grammar]) => { hljs.registerLanguage(name, grammar.default); return hljs }))
  }
  return grammars.get(name)
}

function highlightSoon(code) {
  const named = [...code.classList].find((c) => c.startsWith('language-'))?.slice(9)
  const language = LANGUAGES.has(named) ? named : null
  if (!language && (named || code.textContent.length > MAX_GUESS_CHARS)) return
  const ready = language ? withGrammar(language) : Promise.all(GUESSES.map(withGrammar)).then(([hljs]) => hljs)
  ready.then((hljs) => {
    waiting.push([code, hljs, language])
    if (!draining) { draining = true; setTimeout(drain, 0) }
  }, () => { /* a grammar that failed to load: the block stays plain */ })
}

// One block per task, so highlighting a long answer never holds the main thread for long.
function drain() {
  const item = waiting.shift()
  if (!item) { draining = false; return }
  const [code, hljs, language] = item
  if (code.isConnected && !code.dataset.highlighted) {
    if (language) {
      hljs.highlightElement(code)
    } else {
      const result = hljs.highlightAuto(code.textContent, GUESSES)
      if (result.language && result.relevance > 4) {
        code.innerHTML = result.value
        code.classList.add('hljs')
        const label = code.closest('.codeblock')?.querySelector('.codelang')
        if (label && label.textContent === 'text') label.textContent = result.language
      }
    }
    code.dataset.highlighted = 'yes'
  }
  setTimeout(drain, 0)
}

/** Turn citations into chips and queue code blocks for highlighting inside ``root``. */
export function decorate(root, { highlight = true } = {}) {
  chipsIn(root)
  if (highlight) for (const code of root.querySelectorAll('pre code')) highlightSoon(code)
}

/** Return where the finished blocks of ``text`` end, scanning from ``from`` (a block start).
 *
 * A block is finished at a blank line outside a code fence that is followed by an unindented line
 * (an indented one may continue a list item, which parsed alone would turn into a code block) that
 * does not go on a list (a list with blank lines between its items is one "loose" list).
 */
export function finishedUpTo(text, from) {
  let inFence = false, fence = '', inList = false, done = from, position = from
  while (position < text.length) {
    const newline = text.indexOf('\n', position)
    if (newline < 0) break
    const line = text.slice(position, newline)
    const opened = FENCE.exec(line)
    if (opened && (!inFence || opened[1][0] === fence[0] && opened[1].length >= fence.length)) {
      inFence = !inFence
      fence = opened[1]
    } else if (!inFence && line.trim() === '') {
      const next = text[newline + 1]
      const continues = next === undefined || next === ' ' || next === '\t' || next === '\n' ||
        (inList && /[-*+\d]/.test(next))
      if (position > from && !continues) done = newline + 1
    } else if (!inFence) {
      inList = LIST_ITEM.test(line) || (inList && /^\s/.test(line))
    }
    position = newline + 1
  }
  return done
}

/** A Markdown answer rendered into ``element`` as it streams. */
export class StreamingMarkdown {
  constructor(element) {
    this.element = element
    this.text = ''
    this.frozen = 0
    this.done = false
    this.tail = document.createElement('div')
    this.tail.className = 'md-tail'
    element.append(this.tail)
    this.frame = 0
    this.waiters = []
  }

  /** Add streamed text; it shows at the next animation frame. */
  append(delta) {
    this.text += delta
    this.schedule()
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render() })
  }

  render() {
    let upTo = finishedUpTo(this.text, this.frozen)
    const behind = upTo - this.frozen > FRAME_BUDGET_CHARS
    if (behind) {  // a burst: render what fits in this frame's budget now, the rest in the next ones
      const within = finishedUpTo(this.text.slice(0, this.frozen + FRAME_BUDGET_CHARS), this.frozen)
      if (within > this.frozen) upTo = within
    }
    if (upTo > this.frozen) {
      const block = document.createElement('div')
      block.className = 'md-block'
      block.innerHTML = renderMarkdown(this.text.slice(this.frozen, upTo))
      decorate(block)
      this.tail.before(block)
      this.frozen = upTo
    }
    if (behind && finishedUpTo(this.text, this.frozen) > this.frozen) {
      this.tail.replaceChildren()
      this.schedule()
      return
    }
    this.tail.innerHTML = renderMarkdown(this.text.slice(this.frozen))
    decorate(this.tail, { highlight: this.done })
    if (this.done) for (const resolve of this.waiters.splice(0)) resolve()
  }

  /** End the stream: render the rest (over the next frames); with ``withoutSources`` leave out a trailing
   * "Sources:" list. Return the text shown. */
  finish({ withoutSources = false } = {}) {
    this.done = true
    if (withoutSources) {
      const at = this.text.lastIndexOf(`\n\n${SOURCES_HEADING}\n`)
      if (at >= 0) this.text = this.text.slice(0, at)
    }
    if (this.text.length < this.frozen) {  // the list was already frozen into a block: render again
      this.element.replaceChildren(this.tail)
      this.frozen = 0
    }
    this.schedule()
    return this.text
  }

  /** Resolve once everything finished has been rendered. */
  settled() {
    return new Promise((resolve) => { if (this.done && !this.frame) resolve(); else this.waiters.push(resolve) })
  }
}

/** Render a whole Markdown text into ``element`` (a restored message). */
export function renderInto(element, text) {
  element.innerHTML = renderMarkdown(text)
  decorate(element)
}

// The first parse compiles marked's and DOMPurify's code and regular expressions (measured cold here:
// about 20 ms for marked, 4 to 12 ms for DOMPurify), which landed in the first frame of an answer and
// with the frame's own work made it a long task. Do each while the page is idle, one task apiece.
const idle = globalThis.requestIdleCallback || ((callback) => setTimeout(callback, 50))
const WARM_UP = '# a\n\n*b* `c` [d](e) a.py:1-2\n\n- f\n\n1. g\n\n> h\n\n| i |\n|---|\n| j |\n\n```\nk\n```\n'
idle(() => {
  const parsed = markdown.parse(WARM_UP)
  idle(() => {
    const root = document.createElement('div')
    root.innerHTML = DOMPurify.sanitize(parsed, SANITIZE)
    idle(() => decorate(root, { highlight: false }))
  })
})
