locals {
  local_mode = var.local_endpoint_url != null
  # Every service this example touches, for the local (moto) endpoint override.
  local_services = ["cloudtrail", "cloudwatch", "dynamodb", "ec2", "events", "firehose", "iam", "kinesis", "kms", "s3", "sns", "sts"]
}

provider "aws" {
  region = var.region

  # Local emulator mode only (var.local_endpoint_url, loopback-validated): route every call to moto
  # and skip the checks that need a real account. With the default (null) none of this applies.
  s3_use_path_style           = local.local_mode
  skip_credentials_validation = local.local_mode
  skip_metadata_api_check     = local.local_mode
  skip_requesting_account_id  = false
  access_key                  = local.local_mode ? "testing" : null
  secret_key                  = local.local_mode ? "testing" : null

  dynamic "endpoints" {
    for_each = local.local_mode ? [var.local_endpoint_url] : []
    content {
      cloudtrail = endpoints.value
      cloudwatch = endpoints.value
      dynamodb   = endpoints.value
      ec2        = endpoints.value
      events     = endpoints.value
      firehose   = endpoints.value
      iam        = endpoints.value
      kinesis    = endpoints.value
      kms        = endpoints.value
      s3         = endpoints.value
      sns        = endpoints.value
      sts        = endpoints.value
    }
  }

  default_tags {
    tags = {
      "saip:example" = "secure-ingestion"
    }
  }
}
