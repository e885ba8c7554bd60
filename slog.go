package baton

import (
	"context"
	"fmt"
	"log/slog"
)

// SlogLogger adapts a *slog.Logger to Logger (and so to the Logger of
// packages drain and upgrade, whose methods are a subset): each message
// is formatted and logged at its level. Nil means slog.Default().
func SlogLogger(l *slog.Logger) Logger {
	if l == nil {
		l = slog.Default()
	}
	return slogLogger{l}
}

type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Infof(format string, args ...any) { s.log(slog.LevelInfo, format, args) }
func (s slogLogger) Warnf(format string, args ...any) { s.log(slog.LevelWarn, format, args) }
func (s slogLogger) Errorf(format string, args ...any) {
	s.log(slog.LevelError, format, args)
}

func (s slogLogger) log(level slog.Level, format string, args []any) {
	if s.l.Enabled(context.Background(), level) {
		s.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}
