package drain

import "net/http"

// Unsent returns how many server connections hold answers the kernel
// cannot send because the client does not read them.
func (d *Drainer) Unsent() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for c := range d.conns {
		if underWay(c, http.StateIdle) {
			n++
		}
	}
	return n
}
