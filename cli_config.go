package main

// cli_config.go is "authbox config": the effective configuration, as TOML
// that "--config" reads back, like Dovecot's doveconf.

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
)

func configCommand(usageErr cli.OnUsageErrorFunc) *cli.Command {
	return &cli.Command{
		Name:         "config",
		Usage:        "print the effective configuration (the built-in defaults, overlaid with --config) as TOML",
		OnUsageError: usageErr,
		Flags: []cli.Flag{newConfigFlag(),
			&cli.BoolFlag{Name: "changed", Usage: "print only the keys whose values differ from the built-in defaults (like doveconf -n)"}},
		Action: func(ctx *cli.Context) error {
			if err := noCLIArgs(ctx); err != nil {
				return err
			}
			cfg, err := loadConfig(ctx)
			if err != nil {
				return err
			}
			return writeConfigTOML(ctx.App.Writer, cfg, ctx.Bool("changed"))
		},
	}
}

// writeConfigTOML writes cfg's keys in the order of auth.toml (the order
// of Config's fields), the tables ([client], [etcd]) last; with changed, only those
// that differ from the defaults, and the table only if one of its keys
// does.
func writeConfigTOML(w io.Writer, cfg Config, changed bool) error {
	def := DefaultConfig()
	var top bytes.Buffer
	if err := writeKeys(&top, reflect.ValueOf(cfg), reflect.ValueOf(def), changed); err != nil {
		return err
	}
	out := top.String()
	for _, table := range []struct {
		name     string
		cfg, def any
	}{{"client", cfg.Client, def.Client}, {"etcd", cfg.Etcd, def.Etcd}} {
		var b bytes.Buffer
		if err := writeKeys(&b, reflect.ValueOf(table.cfg), reflect.ValueOf(table.def), changed); err != nil {
			return err
		}
		if b.Len() > 0 {
			if out != "" {
				out += "\n"
			}
			out += "[" + table.name + "]\n" + b.String()
		}
	}
	_, err := io.WriteString(w, out)
	return err
}

// writeKeys writes the plain fields of the struct v as TOML keys, one a
// line; a field that is itself a table is left to the caller.
func writeKeys(w io.Writer, v, def reflect.Value, changed bool) error {
	for i := range v.NumField() {
		f := v.Type().Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if key == "" || f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration{}) {
			continue
		}
		val := v.Field(i).Interface()
		if changed && reflect.DeepEqual(val, def.Field(i).Interface()) {
			continue
		}
		var b bytes.Buffer
		if err := toml.NewEncoder(&b).Encode(map[string]any{key: val}); err != nil {
			return fmt.Errorf("config key %s: %w", key, err)
		}
		if _, err := w.Write(b.Bytes()); err != nil {
			return err
		}
	}
	return nil
}
