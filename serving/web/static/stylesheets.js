// Stylesheets the page needs only once something shows (highlighted code, the code panel), so that
// loading the page waits for one stylesheet, not four.

const loaded = new Set()

/** Add a stylesheet of this service to the page once; ``media`` limits it (e.g. to a colour scheme). */
export function loadStylesheet(href, media = 'all') {
  const key = `${href} ${media}`
  if (loaded.has(key)) return
  loaded.add(key)
  const link = document.createElement('link')
  link.rel = 'stylesheet'
  link.href = href
  link.media = media
  document.head.append(link)
}
