//! `pipewatch openapi`: prints the API's OpenAPI 3.1 description (`server::openapi`), the
//! document `GET /api/openapi.json` serves, byte for byte. It needs no configuration and no
//! running dashboard, so a client can be generated from a build alone.

use std::io::Write;

use super::CliError;
use crate::exit;
use crate::server::openapi;

pub fn command() -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(openapi::json().as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(exit::SUCCESS)
}
