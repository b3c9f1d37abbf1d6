// Package browser holds the console's browser tests: they build the real
// binary, run `sorakaq all` on loopback ports with a temporary data
// directory and a local callback sink, and drive the console (web/) in a
// headless Debian chromium with chromedp: login, topics, messages (look
// up, cancel, set delay, re-drive, re-drive all), instances and the
// monitoring charts.
//
// Run them with: go test ./test/browser/
//
// They skip when /usr/bin/chromium is missing (apt-get install chromium;
// or point SORAKAQ_CHROMIUM at another build). SORAKAQ_BROWSER_BIN=path
// tests a binary built already instead of building ./cmd/sorakaq. With
// SORAKAQ_SCREENSHOTS=1 they also write images/console-*.png (1280x800
// viewport, full page).
package browser
