// Package mmsg reads and writes batches of UDP datagrams with one system
// call (recvmmsg and sendmmsg on Linux), into receive buffers that are
// pooled and mapped outside the Go heap, so that a socket waiting for
// traffic holds none. It allocates nothing per datagram.
//
// On other systems the package is empty and Supported is false.
package mmsg
