//go:build !linux

package p2pd

// havePark is false: pipes keep their goroutine while idle.
const havePark = false

type parker struct{}

func (p *Pipe) canPark() bool { return false }

func (*parker) park(*Pipe) bool { return false }
func (*parker) wake(*Pipe) bool { return false }
func (*parker) hold()           {}
func (*parker) release()        {}
