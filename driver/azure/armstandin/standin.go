// Package armstandin is a stand-in for Azure Resource Manager, for the
// Azure drivers' tests: Azure cannot be reached from a test, so this
// serves the few resources the drivers use (load balancers, application
// gateways, Front Door origins) over TLS on 127.0.0.1, the way ARM's REST
// API documents them: ETags and If-Match (412 when stale), writes that
// are long-running operations (Azure-AsyncOperation, Location) answered
// "InProgress" a few times, 429 with Retry-After, 5xx, and the request
// rules the API specification gives for each resource (Validate). A VIP
// beside it sends /api/test to the slot the resource routes to, a
// configurable delay after a write changed it, as Azure's data plane
// follows its control plane seconds later.
package armstandin

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
)

// Resource is a resource's JSON, as ARM stores it.
type Resource = map[string]any

// Validator checks a write to a resource whose path matches its suffix
// rule: old is the stored resource (nil on create), next what the
// request would store. It returns what the specification refuses, as ARM's
// error code and message.
type Validator func(old, next Resource) (code, msg string)

// Request is one request the stand-in received.
type Request struct {
	Method, Path, IfMatch string
	Body                  []byte
}

// Server is the stand-in.
type Server struct {
	// TLS is the HTTPS server; its Client() trusts it.
	TLS *httptest.Server

	mu        sync.Mutex
	resources map[string]Resource // by lower-cased path
	etags     map[string]int
	ops       map[string]*operation
	validate  map[string]Validator // by resource type ("loadBalancers")
	actions   map[string]func(s *Server, path string) (any, error)
	onWrite   []func(path string)
	requests  []Request

	// Faults, each consumed by the next requests (under mu through
	// Fault).
	throttle   int    // answer 429 with Retry-After
	fail       int    // answer 500
	garbage    int    // answer a GET with broken JSON
	opPolls    int    // how many "InProgress" answers an operation gives; -1: never done
	beforePut  func() // runs once before the next write is checked
	retryAfter string // the Retry-After header's value on 429 and operations
	opFail     string // the error code the next write's operation ends "Failed" with
	opHost     string // the base of operations' URLs; "" the stand-in's
}

// New starts a stand-in; it is closed when the test ends.
func New() *Server {
	s := &Server{
		resources: map[string]Resource{}, etags: map[string]int{}, ops: map[string]*operation{},
		validate: map[string]Validator{}, actions: map[string]func(*Server, string) (any, error){},
		opPolls: 2, retryAfter: "1",
	}
	s.TLS = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	return s
}

// Close stops the stand-in.
func (s *Server) Close() { s.TLS.Close() }

// URL is ARM's endpoint for the SDK.
func (s *Server) URL() string { return s.TLS.URL }

// Validate sets the rules writes to resources of type typ (the path
// segment before the name: "loadBalancers", "applicationGateways",
// "origins") must follow.
func (s *Server) Validate(typ string, v Validator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.validate[strings.ToLower(typ)] = v
}

// Action serves POST path/name (e.g. "backendhealth") as a long-running
// operation whose result fn returns.
func (s *Server) Action(name string, fn func(s *Server, path string) (any, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.actions[strings.ToLower(name)] = fn
}

// OnWrite calls fn (without the stand-in's lock) after every write that
// completed, with the resource's path.
func (s *Server) OnWrite(fn func(path string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onWrite = append(s.onWrite, fn)
}

// Faults sets what the next requests meet.
type Faults struct {
	// Throttle answers the next N requests 429 with Retry-After.
	Throttle int
	// Fail answers the next N requests 500.
	Fail int
	// Garbage answers the next N GETs of a resource with broken JSON.
	Garbage int
	// OpPolls is how many polls of an operation answer "InProgress"
	// before it succeeds; -1 never finishes. Default 2.
	OpPolls int
	// BeforePut runs once, before the next write is checked: a hand
	// change between vipswap's read and its write.
	BeforePut func()
	// RetryAfter is the Retry-After value in seconds (default "1").
	RetryAfter string
	// OpFail, when set, makes the next write's operation end "Failed"
	// with this error code (ARM's operation status body, the resource's
	// provisioningState "Failed").
	OpFail string
	// OpHost, if set, is the base URL the next operations' URLs
	// (Azure-AsyncOperation, Location) name instead of the stand-in's
	// own: a hostile or broken answer sending the poller elsewhere.
	OpHost string
}

// Fault sets f.
func (s *Server) Fault(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle, s.fail, s.garbage, s.beforePut = f.Throttle, f.Fail, f.Garbage, f.BeforePut
	s.opPolls = f.OpPolls
	s.opFail = f.OpFail
	if f.OpPolls == 0 {
		s.opPolls = 2
	}
	if f.RetryAfter != "" {
		s.retryAfter = f.RetryAfter
	}
	s.opHost = f.OpHost
}

// opBaseLocked is the base URL of operations' URLs.
func (s *Server) opBaseLocked() string {
	if s.opHost != "" {
		return s.opHost
	}
	return s.URL()
}

// Put stores r at path as if created by hand (a new ETag).
func (s *Server) Put(path string, r Resource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeLocked(path, r)
}

// Get returns a deep copy of the resource at path (nil if none).
func (s *Server) Get(path string) Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.resources[strings.ToLower(path)]
	if r == nil {
		return nil
	}
	return clone(r)
}

// Mutate changes the resource at path by hand: a new ETag.
func (s *Server) Mutate(path string, fn func(Resource)) {
	s.mu.Lock()
	r := clone(s.resources[strings.ToLower(path)])
	fn(r)
	s.storeLocked(path, r)
	hooks := s.onWrite
	s.mu.Unlock()
	for _, h := range hooks {
		h(path)
	}
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Writes returns the write requests received (PUT, PATCH) that ARM
// accepted or refused.
func (s *Server) Writes() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Method == http.MethodPut || r.Method == http.MethodPatch {
			out = append(out, r)
		}
	}
	return out
}

func (s *Server) storeLocked(path string, r Resource) {
	key := strings.ToLower(path)
	s.etags[key]++
	r = clone(r)
	// Microsoft.Network's resources carry an etag (readOnly); afdx.json's
	// AFDOrigin, a ProxyResource, has none, so Front Door's answers carry
	// none either (the stand-in still counts versions for If-Match).
	if isNetwork(path) {
		r["etag"] = s.etagLocked(key)
	} else {
		delete(r, "etag")
	}
	r["id"] = path
	s.resources[key] = r
}

func (s *Server) etagLocked(key string) string {
	return fmt.Sprintf(`W/"%08d-etag"`, s.etags[key])
}

type operation struct {
	polls  int // InProgress answers left; -1 forever
	path   string
	result any // for actions
	status string
	fail   string // the error code it ends "Failed" with, if any
}

// maxBody bounds a request body.
const maxBody = 1 << 20

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		armError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "body too large")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		armError(w, http.StatusUnauthorized, "AuthenticationFailed", "no bearer token")
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		armError(w, http.StatusBadRequest, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, IfMatch: r.Header.Get("If-Match"), Body: body})
	switch {
	case s.throttle > 0:
		s.throttle--
		ra := s.retryAfter
		s.mu.Unlock()
		w.Header().Set("Retry-After", ra)
		armError(w, http.StatusTooManyRequests, "TooManyRequests", "throttled")
		return
	case s.fail > 0:
		s.fail--
		s.mu.Unlock()
		armError(w, http.StatusInternalServerError, "InternalServerError", "transient")
		return
	}
	s.mu.Unlock()

	path := r.URL.Path
	if strings.Contains(path, "/operations/") {
		s.serveOperation(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.serveGet(w, path)
	case http.MethodPut, http.MethodPatch:
		s.serveWrite(w, r, path, body)
	case http.MethodPost:
		s.serveAction(w, r, path)
	default:
		armError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method)
	}
}

func (s *Server) serveGet(w http.ResponseWriter, path string) {
	s.mu.Lock()
	res, ok := s.resources[strings.ToLower(path)]
	garbage := false
	if ok && s.garbage > 0 {
		s.garbage--
		garbage = true
	}
	var b []byte
	if ok {
		b, _ = json.Marshal(res)
		if e := Str(res["etag"]); e != "" {
			w.Header().Set("ETag", e)
		}
	}
	s.mu.Unlock()
	switch {
	case !ok:
		armError(w, http.StatusNotFound, "ResourceNotFound", "The Resource '"+path+"' was not found.")
	case garbage:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"name": "x", "properties": {"probes": [ {"name": `))
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}
}

// typeOf returns the resource type of path: the segment before its name.
func typeOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) < 2 {
		return ""
	}
	return strings.ToLower(parts[len(parts)-2])
}

func (s *Server) serveWrite(w http.ResponseWriter, r *http.Request, path string, body []byte) {
	var next Resource
	if err := json.Unmarshal(body, &next); err != nil || next == nil {
		armError(w, http.StatusBadRequest, "InvalidRequestContent", "The request content was invalid and could not be deserialized.")
		return
	}
	s.mu.Lock()
	hook := s.beforePut
	s.beforePut = nil
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	key := strings.ToLower(path)
	network := isNetwork(path)
	s.mu.Lock()
	old, exists := s.resources[key]
	if r.Method == http.MethodPatch {
		if !exists {
			s.mu.Unlock()
			armError(w, http.StatusNotFound, "ResourceNotFound", "The Resource '"+path+"' was not found.")
			return
		}
		if network {
			// Microsoft.Network's PATCH (LoadBalancers_UpdateTags,
			// ApplicationGateways_UpdateTags) takes a TagsObject: tags
			// and nothing else, answered 200 at once.
			for k := range next {
				if k != "tags" {
					s.mu.Unlock()
					armError(w, http.StatusBadRequest, "InvalidRequestContent", "PATCH of "+typeOf(path)+" changes tags only; the body has "+k)
					return
				}
			}
		}
		next = merge(clone(old), next)
	}
	if im := r.Header.Get("If-Match"); im != "" && im != "*" && (!exists || im != s.etagLocked(key)) {
		s.mu.Unlock()
		armError(w, http.StatusPreconditionFailed, "PreconditionFailed", "The condition specified using HTTP conditional header(s) is not met.")
		return
	}
	// What the specification marks readOnly is ignored when sent.
	delete(next, "etag")
	delete(next, "type")
	delete(next, "systemData")
	if p, ok := next["properties"].(map[string]any); ok {
		for _, k := range readOnlyProps {
			delete(p, k)
		}
	}
	if r.Method == http.MethodPatch && network {
		if p, ok := next["properties"].(map[string]any); ok {
			p["provisioningState"] = Str(Obj(old["properties"])["provisioningState"])
		}
		if old["type"] != nil {
			next["type"] = old["type"]
		}
		s.storeLocked(path, next)
		stored := s.resources[key]
		b, _ := json.Marshal(stored)
		s.mu.Unlock()
		w.Header().Set("ETag", Str(stored["etag"]))
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	if old != nil && old["type"] != nil {
		next["type"] = old["type"]
	}
	if v := s.validate[typeOf(path)]; v != nil {
		if code, msg := v(old, next); code != "" {
			s.mu.Unlock()
			armError(w, http.StatusBadRequest, code, msg)
			return
		}
	}
	if p, ok := next["properties"].(map[string]any); ok {
		p["provisioningState"] = "Updating"
	}
	s.storeLocked(path, next)
	stored := s.resources[key]
	id := s.newOpLocked(path, nil)
	b, _ := json.Marshal(stored)
	etag := Str(stored["etag"])
	ra := s.retryAfter
	base := s.opBaseLocked()
	s.mu.Unlock()
	w.Header().Set("Azure-AsyncOperation", base+"/subscriptions/standin/providers/Microsoft.Network/locations/local/operations/"+id+"?api-version="+r.URL.Query().Get("api-version"))
	w.Header().Set("Retry-After", ra)
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodPatch:
		// afdx.json: a PATCH is answered 200 or 202, and the service
		// answers 202 while the change rolls out.
		w.WriteHeader(http.StatusAccepted)
	case exists:
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusCreated)
	}
	w.Write(b)
}

// readOnlyProps are the properties the specification marks readOnly on the
// resources served (provisioningState and resourceGuid on
// Microsoft.Network's, operationalState on a gateway, deploymentStatus and
// originGroupName on a Front Door origin): what a write carries of them is
// ignored.
var readOnlyProps = []string{"provisioningState", "resourceGuid", "operationalState", "deploymentStatus", "originGroupName"}

// isNetwork tells a Microsoft.Network resource (load balancer, gateway)
// from a Microsoft.Cdn one.
func isNetwork(path string) bool {
	return strings.Contains(strings.ToLower(path), "/providers/microsoft.network/")
}

func (s *Server) newOpLocked(path string, result any) string {
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	op := &operation{polls: s.opPolls, path: path, result: result}
	if result == nil {
		op.fail, s.opFail = s.opFail, ""
	}
	s.ops[id] = op
	return id
}

func (s *Server) serveAction(w http.ResponseWriter, r *http.Request, path string) {
	i := strings.LastIndex(path, "/")
	name, target := strings.ToLower(path[i+1:]), path[:i]
	s.mu.Lock()
	fn := s.actions[name]
	_, exists := s.resources[strings.ToLower(target)]
	s.mu.Unlock()
	if fn == nil || !exists {
		armError(w, http.StatusNotFound, "ResourceNotFound", "no such action or resource: "+path)
		return
	}
	result, err := fn(s, target)
	if err != nil {
		armError(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	s.mu.Lock()
	id := s.newOpLocked(target, result)
	ra := s.retryAfter
	base := s.opBaseLocked()
	s.mu.Unlock()
	w.Header().Set("Location", base+"/subscriptions/standin/providers/Microsoft.Network/locations/local/operations/"+id+"?api-version="+r.URL.Query().Get("api-version")+"&result=1")
	w.Header().Set("Retry-After", ra)
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) serveOperation(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	s.mu.Lock()
	op := s.ops[id]
	if op == nil {
		s.mu.Unlock()
		armError(w, http.StatusNotFound, "OperationNotFound", id)
		return
	}
	ra := s.retryAfter
	inProgress := op.polls != 0
	if op.polls > 0 {
		op.polls--
	}
	var hooks []func(string)
	if !inProgress && op.status == "" {
		op.status = "Succeeded"
		if op.fail != "" {
			op.status = "Failed"
		}
		if res := s.resources[strings.ToLower(op.path)]; res != nil && op.result == nil {
			if p, ok := res["properties"].(map[string]any); ok {
				p["provisioningState"] = op.status
			}
			hooks = s.onWrite
		}
	}
	s.mu.Unlock()
	for _, h := range hooks {
		h(op.path)
	}
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Query().Get("result") != "" { // a Location poll of an action
		if inProgress {
			w.Header().Set("Retry-After", ra)
			w.Header().Set("Location", s.URL()+r.URL.RequestURI())
			w.WriteHeader(http.StatusAccepted)
			return
		}
		b, _ := json.Marshal(op.result)
		w.Write(b)
		return
	}
	if inProgress {
		w.Header().Set("Retry-After", ra)
		fmt.Fprint(w, `{"status":"InProgress"}`)
		return
	}
	if op.fail != "" {
		b, _ := json.Marshal(map[string]any{"status": "Failed", "error": map[string]string{"code": op.fail, "message": "the operation failed"}})
		w.Write(b)
		return
	}
	fmt.Fprint(w, `{"status":"Succeeded"}`)
}

func armError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-ms-error-code", code)
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	w.Write(b)
}

func clone(r Resource) Resource {
	if r == nil {
		return Resource{}
	}
	b, _ := json.Marshal(r)
	var out Resource
	json.Unmarshal(b, &out)
	return out
}

// merge applies a JSON merge patch (RFC 7396), as ARM's PATCH does.
func merge(dst, patch map[string]any) map[string]any {
	for k, v := range patch {
		if v == nil {
			delete(dst, k)
			continue
		}
		if pm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = merge(dm, pm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// Num returns v as a float64 and whether it is a JSON number.
func Num(v any) (float64, bool) {
	f, ok := v.(float64)
	return f, ok
}

// Str returns v as a string ("" if it is none).
func Str(v any) string {
	s, _ := v.(string)
	return s
}

// Obj returns v as an object (nil if it is none).
func Obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// List returns v as a list of objects (those that are).
func List(v any) []map[string]any {
	l, _ := v.([]any)
	out := make([]map[string]any, 0, len(l))
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// Itoa is strconv.Itoa, for validators' messages.
func Itoa(i int) string { return strconv.Itoa(i) }
