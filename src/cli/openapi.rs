//! `pipewatch openapi`: prints the API's OpenAPI 3.1 description (`server::openapi`), the
//! document `GET /api/openapi.json` serves, byte for byte. It needs no configuration and no
//! running dashboard, so a client can be generated from a build alone.

use super::CliError;
use crate::exit;
use crate::server::openapi;

pub fn command() -> Result<u8, CliError> {
    super::out::stdout().line(openapi::json())?;
    Ok(exit::SUCCESS)
}
