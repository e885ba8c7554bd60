package main

import (
	"context"
	"io"
)

func reload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return &usageError{"reload: not available in this build"}
}
