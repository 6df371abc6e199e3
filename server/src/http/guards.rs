//! Refuses request heads larger than `http.max_header_bytes` with 431, before any handler runs.
//! actix's parser has only a fixed ceiling (128 KiB); this makes the limit configurable.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError as _, web};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct HeaderLimit(pub usize);

pub async fn header_size(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let limit = req
        .app_data::<web::Data<HeaderLimit>>()
        .map_or(usize::MAX, |l| l.0);
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + req.uri().to_string().len();
    if size > limit {
        let problem = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request header fields too large",
            format!("the request line and headers take {size} bytes; the limit is {limit}"),
        )
        .with("limit_bytes", limit as u64);
        return Ok(req
            .into_response(problem.error_response())
            .map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
