//go:build !linux

package p2pd

func interfaces() ([]Interface, error) { return interfacesNet() }

func defaultIndex(f Family) (int, error) {
	list, err := interfacesNet()
	if err != nil {
		return 0, err
	}
	return defaultIndexDial(f, list)
}
