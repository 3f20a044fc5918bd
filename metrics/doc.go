// Package metrics exposes a drvkit daemon's counters to Prometheus.
//
// A Collector reads, at scrape time, what the daemon already counts —
// the registry's services, the netlink source's and the hotplug bridge's
// statistics, the user-client server's connections, the live traced
// objects of refcount — and follows the registry's lifecycle stream
// (driver.Registry.SubscribeLifecycle) for what only that stream knows:
// steps by kind, terminations, the uevent → driver Start latency and the
// terminate → free duration. Nothing is added to a hot path: reference
// counting and the registry pay no metric of their own, and a scrape costs
// what walking the registry costs.
//
// Every label has a bounded set of values: service and object classes
// (named by code, not by devices), lifecycle steps, service states,
// termination causes and rejection reasons. No label names a device, a
// service ID or a process.
//
// The metric names and their meaning are listed in docs/readme-parts/observe.md.
package metrics
