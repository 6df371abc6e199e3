//! Authentication for `/api`: a valid key puts a [`Principal`] in the request; anything else is
//! answered here with 401/429 problem+json. Handlers take `Principal` as an extractor.

use std::future::{Ready, ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, ResponseError as _, web};

use crate::auth::{AuthService, Principal};
use crate::error::ApiError;

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(auth) = req.app_data::<web::Data<AuthService>>().cloned() else {
        let err = ApiError::internal("authentication is not configured", "AuthService missing");
        return Ok(req
            .into_response(err.error_response())
            .map_into_right_body());
    };
    let ip = req.peer_addr().map(|a| a.ip());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    match auth.authenticate(header.as_deref(), ip).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(err) => {
            let mut res = err.error_response();
            if err.status() == actix_web::http::StatusCode::UNAUTHORIZED {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"patchbay\""),
                );
            }
            Ok(req.into_response(res).map_into_right_body())
        }
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Principal>().cloned().ok_or_else(|| {
            ApiError::unauthorized("missing-auth", "send Authorization: Bearer <api key>")
        }))
    }
}
