package gofunc

import "github.com/idem-run/idem/function"

var _ function.EventRegioner = (*Function)(nil)

// EventRegion is the region written in the events an InvokeHandler gets:
// the engine sizes a batch's event with it (function.EventSize).
func (f *Function) EventRegion() string { return f.eventRegion() }
