# bench/bench.mk: baton's published benchmark, included by the top Makefile.
# The benchmark is a Go test in its own module (bench/go.mod), so that its
# dependencies stay out of baton's go.mod. Both targets need root (the
# systemd sandbox); see bench/doc.go. They use h2load (Debian's
# nghttp2-client) and wrk (Debian's wrk), both from `make deps`, and ghz,
# which the benchmark installs itself with go install into
# $(BIN)/tools/ghz-VERSION (bench/clients_test.go names the version),
# outside every go.mod.
BENCH_TIMEOUT ?= 60m

# wrk loads webapp with 16,000 keep-alive connections in scenario 10.
APT_PACKAGES += wrk

.PHONY: bench bench-smoke

bench: deps ## run the benchmark (root, ~35 min on 2 cores): writes BENCHMARKS.md and bench/charts/*.svg
	cd bench && $(GO) test -count=1 -timeout $(BENCH_TIMEOUT) -run '^TestBench$$' -v . \
		-args -full -report ../BENCHMARKS.md -charts charts -command 'make bench'

bench-smoke: deps ## the benchmark cut to a few seconds per scenario (run by make test)
	cd bench && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...
