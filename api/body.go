package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxBody bounds an admin request body: the largest legitimate one (a
// change with a MaxReason reason) is far smaller.
const MaxBody = 64 << 10

// MaxReason bounds a change's reason, in bytes. It is kept in the history
// of every change, refused ones included.
const MaxReason = 1 << 10

// decodeBody reads r's JSON body into v. An empty body leaves v zero;
// otherwise the body must be one JSON object of at most MaxBody bytes, with
// no duplicate key (keys match fields case-insensitively, so "force" and
// "Force" are the same key) and no unknown field. encoding/json would take
// the last of duplicate keys, and turn null into "all defaults", silently.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > MaxBody {
		return bodyTooLarge()
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return bodyTooLarge()
	case err != nil:
		return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("reading the request body: %w", err)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := checkObject(data); err != nil {
		return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("malformed JSON body: %w", err)}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("malformed JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))}
	}
	return nil
}

func bodyTooLarge() error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("request body is larger than %d KiB", MaxBody>>10)}
}

// checkObject reports whether data is exactly one JSON object in which no
// object, at any depth, has the same key twice (compared case-insensitively).
func checkObject(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("want a JSON object, got %s", describeToken(tok))
	}
	if err := checkKeys(dec); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return syntaxError(err)
		}
		return errors.New("more than one value")
	}
	return nil
}

// checkKeys walks the rest of an object whose '{' dec has just returned.
func checkKeys(dec *json.Decoder) error {
	seen := make(map[string]bool)
	for {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		if tok == json.Delim('}') {
			return nil
		}
		key := tok.(string) // inside an object the decoder only returns keys here
		folded := strings.ToLower(key)
		if seen[folded] {
			return fmt.Errorf("key %q appears twice (keys are matched case-insensitively)", key)
		}
		seen[folded] = true
		if err := checkValue(dec); err != nil {
			return err
		}
	}
}

// checkValue walks one value, checking the keys of the objects inside it.
func checkValue(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	switch tok {
	case json.Delim('{'):
		return checkKeys(dec)
	case json.Delim('['):
		for dec.More() {
			if err := checkValue(dec); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return syntaxError(err)
	}
	return nil
}

func syntaxError(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("unexpected end of JSON input")
	}
	return err
}

func describeToken(tok json.Token) string {
	switch tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "a number"
}
