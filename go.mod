module github.com/vipswap/vipswap

go 1.26.8

require (
	go.etcd.io/bbolt v1.4.3
	go.uber.org/goleak v1.3.0
	go.yaml.in/yaml/v3 v3.0.6
)

require golang.org/x/sys v0.29.0 // indirect
