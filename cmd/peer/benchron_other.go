//go:build !linux

package main

import (
	"context"
	"errors"
)

func testbedAvailable() error {
	return errors.New("the network-namespace testbed is Linux-only")
}

func failoverNetns(context.Context, int, func(string)) ([]float64, error) {
	return nil, testbedAvailable()
}
