# Everyday targets. "make test" is the README's test command.
.PHONY: test lint bench tidy build

test:
	./scripts/test.sh

lint:
	gofmt -l . | (! grep .)
	go vet ./...
	staticcheck ./...

# Real measurements of the hot path (route pick, table publish, proxied
# round trip). The comparison with HAProxy, nginx and Caddy lives in bench/.
bench:
	go test -run '^$$' -bench . -benchmem -count 5 ./route/ ./proxy/

# Fails when go.mod or go.sum are not tidy.
tidy:
	go mod tidy
	git diff --exit-code go.mod go.sum

build:
	go build -buildvcs=true -o vipswap ./cmd/vipswap
