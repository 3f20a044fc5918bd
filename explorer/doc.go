// Package explorer serves a live, read-only view of a drvkit registry to a
// web browser — the registry tree as it changes, each service's properties,
// state, retain count, openers and holders (why-alive chains), lifecycle
// timelines per service and for the whole registry, and the leak report
// with its stacks: IORegistryExplorer for drvkit.
//
// Everything the page needs is embedded in the binary (no CDN, no external
// asset). The page loads the tree once from /api/tree and then follows the
// lifecycle stream pushed as server-sent events on /api/events, applying
// each step to the tree as it arrives; a periodic re-read reconciles what
// the stream does not carry (retain counts, busy counts).
//
// The handler answers only GET and HEAD: nothing in it changes the
// registry. Where it listens, and who may reach it, is the embedder's
// choice (drvctl serve --http binds to loopback unless told otherwise).
//
// Endpoints, all JSON unless noted:
//
//	/                     the page (HTML, JS and CSS under /assets/)
//	/api/tree             every service not yet freed, with its edges
//	/api/services/{id}    one service: properties, state, openers, holders, timeline
//	/api/timeline         the registry's recent lifecycle steps
//	/api/leaks            the leak report (text and JSON), ?all=1 for every live object
//	/api/events           text/event-stream of lifecycle steps
package explorer
