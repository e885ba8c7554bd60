# deploy/: the Containerfile and Kubernetes manifests, and their checks
# (their own module: the Kubernetes API types stay out of go.mod).
.PHONY: deploy-check deploy-lint

deploy-check: ## check deploy/: manifests decoded strictly into the Kubernetes types, the Containerfile's static build
	cd deploy && $(GO) test -count=1 ./...

deploy-lint: staticcheck
	cd deploy && $(GO) vet ./...
	@cd deploy && $(GO) mod tidy -diff || { echo "deploy/go.mod or deploy/go.sum is not tidy: run go mod tidy in deploy"; exit 1; }
	cd deploy && $(STATICCHECK) ./...
