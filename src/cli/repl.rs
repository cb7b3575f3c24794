//! The interactive SQL shell: rustyline with history and `datafusion-cli`'s helper
//! (multi-line input, highlighting), plus backslash commands for exploring the lake.

use std::path::PathBuf;
use std::str::FromStr;

use datafusion::sql::parser::Statement;
use datafusion_cli::helper::CliHelper;
use datafusion_cli::print_options::PrintOptions;
use rustyline::error::ReadlineError;
use rustyline::Editor;

use super::sql::{parse, run_statement};
use super::OutputFormat;
use crate::error::Result;
use datafusion::prelude::SessionContext;

const HELP: &str = "\
Commands:
  \\d              list tables
  \\d NAME         describe a table's columns
  \\df             list c360 functions
  \\format FORMAT  set the output format: table, csv, tsv, json, ndjson
  \\?              this help
  \\q              quit
SQL statements end with ';' and may span lines.";

/// A backslash command.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Quit,
    Help,
    ListTables,
    Describe(String),
    ListFunctions,
    Format(Option<OutputFormat>),
}

impl FromStr for Command {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let mut words = line.trim().trim_end_matches(';').split_whitespace();
        let cmd = words.next().unwrap_or_default();
        let arg = words.next();
        let unexpected = words.next();
        let parsed = match (cmd, arg) {
            ("\\q" | "\\quit", None) => Command::Quit,
            ("\\?" | "\\h" | "\\help", None) => Command::Help,
            ("\\d", None) => Command::ListTables,
            ("\\d", Some(name)) => Command::Describe(name.to_string()),
            ("\\df", None) => Command::ListFunctions,
            ("\\format" | "\\pset", None) => Command::Format(None),
            ("\\format", Some(f)) => Command::Format(Some(
                <OutputFormat as clap::ValueEnum>::from_str(f, true).map_err(|_| {
                    format!("unknown format '{f}': expected table, csv, tsv, json or ndjson")
                })?,
            )),
            _ => {
                return Err(format!(
                    "unknown command '{}': \\? lists the commands",
                    line.trim()
                ))
            }
        };
        match unexpected {
            Some(extra) => Err(format!("unexpected '{extra}' after {cmd}")),
            None => Ok(parsed),
        }
    }
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".c360_history"))
}

/// Runs the shell until `\q` or end of input. Errors are printed and the loop goes on.
pub async fn run(ctx: &SessionContext, mut print: PrintOptions) -> Result<()> {
    let dialect = ctx.state().config_options().sql_parser.dialect;
    let mut rl: Editor<CliHelper, _> = Editor::new().map_err(readline_err)?;
    rl.set_helper(Some(CliHelper::new(&dialect, print.color)));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!(
        "c360 {} — \\? for help, \\q to quit",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        match rl.readline("c360 ❯ ") {
            Ok(line) if line.trim().is_empty() => {}
            Ok(line) if line.trim_start().starts_with('\\') => {
                let _ = rl.add_history_entry(line.trim());
                match line.parse::<Command>() {
                    Ok(Command::Quit) => break,
                    Ok(cmd) => {
                        if let Err(e) = command(ctx, cmd, &mut print).await {
                            eprintln!("Error: {e}");
                        }
                    }
                    Err(e) => eprintln!("{e}"),
                }
            }
            Ok(line) => {
                let _ = rl.add_history_entry(line.trim_end());
                match parse(ctx, &line) {
                    Ok(statements) => {
                        for statement in statements {
                            if let Err(e) = run_statement(ctx, statement, &print).await {
                                eprintln!("Error: {e}");
                                break;
                            }
                        }
                    }
                    Err(e) => eprintln!("Error: {e}"),
                }
            }
            Err(ReadlineError::Interrupted) => println!("^C"),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(readline_err(e)),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
}

fn readline_err(e: ReadlineError) -> crate::Error {
    crate::Error::io("terminal", std::io::Error::other(e))
}

async fn command(ctx: &SessionContext, cmd: Command, print: &mut PrintOptions) -> Result<()> {
    let query = match cmd {
        Command::Quit => return Ok(()),
        Command::Help => {
            println!("{HELP}");
            return Ok(());
        }
        Command::Format(None) => {
            println!("output format is {:?}", print.format);
            return Ok(());
        }
        Command::Format(Some(f)) => {
            print.format = f.into();
            return Ok(());
        }
        Command::ListTables => "SELECT table_catalog, table_schema, table_name, table_type \
             FROM information_schema.tables WHERE table_schema <> 'information_schema' \
             ORDER BY table_schema, table_name"
            .to_string(),
        Command::Describe(name) => {
            let exists = ctx.table_exist(name.as_str())?;
            if !exists {
                return Err(crate::Error::Usage(format!(
                    "no table named '{name}': \\d lists the tables"
                )));
            }
            format!("DESCRIBE {name}")
        }
        Command::ListFunctions => {
            let names: Vec<String> = c360_udfs::function_names()
                .iter()
                .map(|name| format!("'{name}'"))
                .collect();
            format!(
                "SELECT DISTINCT routine_name AS function, function_type, description, syntax_example \
                 FROM information_schema.routines WHERE routine_name IN ({}) ORDER BY 1",
                names.join(", ")
            )
        }
    };
    for statement in parse(ctx, &query)? {
        run_statement(ctx, statement as Statement, print).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!("\\q".parse(), Ok(Command::Quit));
        assert_eq!("\\d".parse(), Ok(Command::ListTables));
        assert_eq!(
            "\\d  tracks ".parse(),
            Ok(Command::Describe("tracks".into()))
        );
        assert_eq!(
            "\\format CSV".parse(),
            Ok(Command::Format(Some(OutputFormat::Csv)))
        );
        assert!("\\format xml".parse::<Command>().is_err());
        assert!("\\nope".parse::<Command>().is_err());
        assert!("\\d a b".parse::<Command>().is_err());
    }
}
