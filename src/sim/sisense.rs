//! sisense simulator (in progress).

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use super::{SimOptions, VendorSim};

pub struct Sim;

pub fn new(_opts: &SimOptions) -> Arc<dyn VendorSim> {
    Arc::new(Sim)
}

impl VendorSim for Sim {
    fn configure(&self, _cfg: &mut web::ServiceConfig) {}
    fn throttled(&self, _retry_after_s: Option<u64>) -> HttpResponse {
        HttpResponse::TooManyRequests().finish()
    }
    fn server_error(&self) -> HttpResponse {
        HttpResponse::InternalServerError().finish()
    }
}
