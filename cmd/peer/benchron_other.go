//go:build !linux

package main

import (
	"context"
	"errors"
	"time"
)

func testbedAvailable() error {
	return errors.New("the network-namespace testbed is Linux-only")
}

func failoverNetns(context.Context, int, time.Duration, func(string)) (out, heals []float64, err error) {
	return nil, nil, testbedAvailable()
}
