// A Pub/Sub server on localhost that speaks the real Pub/Sub gRPC API
// (cloud.google.com/go/pubsub/v2/pstest, held in memory), for running
// stream_tag against real Pub/Sub clients through PUBSUB_EMULATOR_HOST.
//
//	pubsub-server [-port N]
//
// prints "listening on HOST:PORT" once it serves and stops on SIGINT or
// SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 0, "port to serve on (0: any free port)")
	flag.Parse()
	server := pstest.NewServerWithPort(*port)
	defer server.Close()
	fmt.Printf("listening on %s\n", server.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
