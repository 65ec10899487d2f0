// Package mmsg reads and writes batches of UDP datagrams with one system
// call (recvmmsg and sendmmsg on Linux), into receive buffers that are
// pooled, so that a socket waiting for traffic holds none. They are
// ordinary Go heap memory: a datagram's slice kept too long is at worst
// overwritten by later datagrams, never freed under its holder. The
// package allocates nothing per datagram.
//
// On other systems the package is empty and Supported is false.
package mmsg
