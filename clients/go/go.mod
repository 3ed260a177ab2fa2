// The Go client: generated messages and service stubs (gen/) and example programs (cmd/).
// Versions are upstream releases; this machine builds offline from vendor/, assembled from
// Debian's Go sources by tools/vendor_from_debian.py (make client-setup).
module github.com/poolstream/poolstream/clients/go

go 1.19

require (
	github.com/golang/protobuf v1.5.2
	golang.org/x/net v0.7.0
	golang.org/x/sys v0.3.0
	golang.org/x/text v0.7.0
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
