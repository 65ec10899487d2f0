package p2pd

// Internals for the tests of package p2pd_test.
var (
	InterfacesNet    = interfacesNet
	DefaultIndexDial = defaultIndexDial
)
