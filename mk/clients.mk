# Client toolchains and example programs (Go, Node); included by the Makefile.
#
#   make client-setup   Debian Go packages (if missing), npm ci (if stale),
#                       build clients/go/bin/poolstream-go-client and
#                       clients/node/dist/main.js. Idempotent; quick when done.
#   make client-build   only the two builds (tests/clients run this first).
#
# The Python client (clients/python) is installed by `make setup` with the
# other Python distributions.

# Go from Debian packages (no module proxy; the module builds from a vendor/ made of them). protobuf-1-5 is
# required: golang-google-grpc-dev is also satisfied by protobuf 1.3, with which
# the client builds but panics at run time.
CLIENT_GO_PKGS := golang-go protobuf-compiler golang-google-grpc-dev golang-google-protobuf-dev \
	golang-google-genproto-dev protoc-gen-go protoc-gen-go-grpc golang-github-golang-protobuf-1-5-dev
# apt-get needs root; CI runs the setup as root, elsewhere use sudo if present.
CLIENT_SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)
CLIENT_APT := $(CLIENT_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

# clients/go is a Go module (go.mod). With no module proxy here, it builds from vendor/,
# assembled from Debian's Go sources (clients/go/tools/vendor_from_debian.py), offline.
GO_DIR := clients/go
GO_VENDOR := $(GO_DIR)/vendor/modules.txt
GO_ENV := GO111MODULE=on GOFLAGS=-mod=vendor GOPROXY=off GONOSUMDB=* \
	GOCACHE=$(CURDIR)/.gopath/cache CGO_ENABLED=0
GO_CLIENT := clients/go/bin/poolstream-go-client
# Single-request latency from Go (bench/bench_text.py runs it beside its Python client).
GO_LATENCY := clients/go/bin/poolstream-go-latency
# Load generator for the front-end benchmark (bench/bench_frontends.py).
GO_LOAD := clients/go/bin/poolstream-go-load
GO_SRCS := $(shell find clients/go -name '*.go' -not -path 'clients/go/bin/*' -not -path 'clients/go/vendor/*' 2>/dev/null)

NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.package-lock.json
NODE_CLIENT := $(NODE_DIR)/dist/main.js
NODE_SRCS := $(shell find $(NODE_DIR)/src -name '*.ts' 2>/dev/null)

client-setup:: client-toolchains client-build ## Client toolchains (Go via apt, npm ci) and example builds

client-build: $(GO_CLIENT) $(GO_LATENCY) $(GO_LOAD) $(NODE_CLIENT) ## Build the Go and Node example clients (and the Go latency probe)
.PHONY: client-build

# Install the Debian Go packages when `go` or any package is missing; Node and
# npm from Debian only when absent (the CI image has Node 20).
client-toolchains:
	@command -v dpkg-query >/dev/null || { echo "client-setup: needs a Debian system (dpkg/apt)"; exit 1; }
	@missing=$$(for p in $(CLIENT_GO_PKGS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ] || ! command -v go >/dev/null; then \
		echo "client-setup: installing Debian packages:" $$missing; \
		$(CLIENT_APT) update -qq && \
		$(CLIENT_APT) install -y -qq --no-install-recommends $(CLIENT_GO_PKGS) \
			$$(command -v npm >/dev/null || echo nodejs npm); \
	fi
	@dpkg-query -W -f='$${Status}\n' golang-github-golang-protobuf-1-5-dev | grep -q '^install ok installed' || \
		{ echo "client-setup: golang-github-golang-protobuf-1-5-dev is not installed"; exit 1; }
.PHONY: client-toolchains

# npm ci whenever package.json or package-lock.json is newer than the install
# (npm writes node_modules/.package-lock.json).
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json | client-toolchains
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(NODE_CLIENT): $(NODE_STAMP) $(NODE_SRCS) $(NODE_DIR)/tsconfig.json
	cd $(NODE_DIR) && node_modules/.bin/tsc -p tsconfig.json
	touch $@

$(GO_VENDOR): $(GO_DIR)/go.mod $(GO_SRCS) $(GO_DIR)/tools/vendor_from_debian.py | client-toolchains
	GOCACHE=$(CURDIR)/.gopath/cache python3 $(GO_DIR)/tools/vendor_from_debian.py

# `go build ./...` in module mode: every package (generated ones included), then the programs.
$(GO_CLIENT): $(GO_SRCS) $(GO_VENDOR) | client-toolchains
	cd $(GO_DIR) && $(GO_ENV) go build ./... && $(GO_ENV) go vet ./cmd/... && \
		$(GO_ENV) go build -o bin/poolstream-go-client ./cmd/poolstream-go-client

$(GO_LATENCY): $(GO_SRCS) $(GO_VENDOR) | client-toolchains
	cd $(GO_DIR) && $(GO_ENV) go build -o bin/poolstream-go-latency ./cmd/poolstream-go-latency

$(GO_LOAD): $(GO_SRCS) $(GO_VENDOR) | client-toolchains
	cd $(GO_DIR) && $(GO_ENV) go build -o bin/poolstream-go-load ./cmd/poolstream-go-load

# Code generation runs the local Go plugins (Debian) and ts-proto (npm).
gen: client-toolchains $(NODE_STAMP)
