package main

import (
	"bufio"
	"io"
	"net"
)

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func copyConn(dst io.Writer, src io.Reader) { io.Copy(dst, src) }
