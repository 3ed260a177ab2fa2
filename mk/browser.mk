# Headless Chromium for the page's tests (tests/http/test_page.py); included by the Makefile.
#
#   make browser-setup   Debian's chromium package, if missing (apt-get; as root, or with sudo).
#
# Debian's build, not a browser downloaded by a test tool: it installs from the
# distribution's archive like the Go toolchain of mk/clients.mk.
BROWSER_SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)
BROWSER_APT := $(BROWSER_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

browser-setup:: ## Headless Chromium (Debian package) for the page tests
	@command -v chromium >/dev/null || { \
		command -v dpkg-query >/dev/null || { echo "browser-setup: needs a Debian system (apt)"; exit 1; }; \
		echo "browser-setup: installing Debian's chromium"; \
		$(BROWSER_APT) update -qq && $(BROWSER_APT) install -y -qq --no-install-recommends chromium; }
