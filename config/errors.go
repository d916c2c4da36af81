package config

import (
	"errors"
	"strconv"
)

// FieldError is one problem in a config file. Parse and Validate return every
// problem they find as a *FieldError joined with errors.Join, so that a
// caller can print one line per problem, or find the path and line of each
// with errors.As.
type FieldError struct {
	// Path names the setting, as in mappings[0].batchSize. It is empty for
	// problems with the file as a whole (empty, malformed YAML).
	Path string
	// Line is the 1-based line of the setting in the YAML file, or 0 when
	// unknown (always 0 from Validate, which sees no file).
	Line int
	// Err says what is wrong, with the allowed range.
	Err error
}

// Error returns "path: problem", or only the problem when there is no path.
// The line is left out so that the message is the same from Parse and from
// Validate; Load adds "FILE:LINE: " in front.
func (e *FieldError) Error() string {
	msg := "invalid"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Path == "" {
		return msg
	}
	return e.Path + ": " + msg
}

// Unwrap returns the underlying problem, e.g. a JMESPath parse error.
func (e *FieldError) Unwrap() error { return e.Err }

// fileError puts a file name (and line) in front of a FieldError, the way
// compilers do, so that an editor can jump to it.
type fileError struct {
	file string
	err  *FieldError
}

func (e *fileError) Error() string {
	if e.err.Line > 0 && e.err.Path != "" {
		return e.file + ":" + strconv.Itoa(e.err.Line) + ": " + e.err.Error()
	}
	return e.file + ": " + e.err.Error()
}

func (e *fileError) Unwrap() error { return e.err }

// inFile prefixes every problem of a joined error with the file name.
func inFile(file string, err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		var fe *FieldError
		if errors.As(e, &fe) {
			out = append(out, &fileError{file: file, err: fe})
		} else {
			out = append(out, &fileError{file: file, err: &FieldError{Err: e}})
		}
	}
	return errors.Join(out...)
}

// join turns a list of problems into one error, nil for none.
func join(list []*FieldError) error {
	if len(list) == 0 {
		return nil
	}
	errs := make([]error, len(list))
	for i, e := range list {
		errs[i] = e
	}
	return errors.Join(errs...)
}
