# Unit tests of modules/vpc-endpoints with a mocked AWS provider.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  prefix              = "saip-test"
  vpc_id              = "vpc-0123456789abcdef0"
  subnet_ids          = ["subnet-0123456789abcdef0"]
  route_table_ids     = ["rtb-0123456789abcdef0"]
  allowed_cidr_blocks = ["10.0.1.0/24"]
  policies = {
    kinesis  = [{ sid = "K", principal_arns = ["arn:aws:iam::123456789012:role/p"], actions = ["kinesis:PutRecords"], resources = ["arn:aws:kinesis:eu-west-1:123456789012:stream/s"] }]
    kms      = [{ sid = "M", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["kms:Decrypt"], resources = ["arn:aws:kms:eu-west-1:123456789012:key/k"] }]
    firehose = [{ sid = "F", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["firehose:DescribeDeliveryStream"], resources = ["arn:aws:firehose:eu-west-1:123456789012:deliverystream/f"] }]
    s3       = [{ sid = "S", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["s3:GetObject"], resources = ["arn:aws:s3:::b/*"] }]
  }
}

run "private_endpoint_per_service" {
  command = apply
  module {
    source = "./modules/vpc-endpoints"
  }
  assert {
    condition     = toset([for e in aws_vpc_endpoint.interface : e.service_name]) == toset(["com.amazonaws.eu-west-1.kinesis-streams", "com.amazonaws.eu-west-1.kms", "com.amazonaws.eu-west-1.kinesis-firehose"])
    error_message = "interface endpoints for Kinesis, KMS and Firehose are required"
  }
  assert {
    condition     = alltrue([for e in aws_vpc_endpoint.interface : e.private_dns_enabled && e.vpc_endpoint_type == "Interface"])
    error_message = "interface endpoints must have private DNS on"
  }
  assert {
    condition     = aws_vpc_endpoint.s3[0].vpc_endpoint_type == "Gateway" && aws_vpc_endpoint.s3[0].service_name == "com.amazonaws.eu-west-1.s3"
    error_message = "an S3 gateway endpoint is required"
  }
  assert {
    condition     = alltrue([for e in concat(values(aws_vpc_endpoint.interface), aws_vpc_endpoint.s3) : length(jsondecode(e.policy).Statement) > 0])
    error_message = "every endpoint carries a policy"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.https : r.from_port == 443 && r.to_port == 443 && r.cidr_ipv4 != "0.0.0.0/0"])
    error_message = "endpoints accept only HTTPS from the workload CIDRs"
  }
}

run "shared_vpc_creates_nothing_and_hands_over_the_policies" {
  command = apply
  module {
    source = "./modules/vpc-endpoints"
  }
  variables {
    create_endpoints = false
  }
  assert {
    condition     = length(aws_vpc_endpoint.interface) == 0 && length(aws_vpc_endpoint.s3) == 0 && length(aws_security_group.endpoints) == 0 && output.endpoint_ids == {}
    error_message = "in a shared VPC no endpoint (and no restrictive policy) may be created"
  }
  assert {
    condition     = keys(output.policies) == ["firehose", "kinesis", "kms", "s3"] && jsondecode(output.policies["s3"]).Statement[0].Resource == ["arn:aws:s3:::b/*"]
    error_message = "the endpoint policies must still be produced for the VPC owner"
  }
}

run "rejects_bad_ids_and_open_cidr" {
  command = plan
  module {
    source = "./modules/vpc-endpoints"
  }
  variables {
    prefix              = "Bad"
    vpc_id              = "vpc-x"
    subnet_ids          = ["subnet-x"]
    route_table_ids     = ["rtb-x"]
    allowed_cidr_blocks = ["0.0.0.0/0"]
  }
  expect_failures = [var.prefix, var.vpc_id, var.subnet_ids, var.route_table_ids, var.allowed_cidr_blocks]
}

run "rejects_not_a_cidr" {
  command = plan
  module {
    source = "./modules/vpc-endpoints"
  }
  variables {
    allowed_cidr_blocks = ["not-a-cidr/8"]
  }
  expect_failures = [var.allowed_cidr_blocks]
}

run "rejects_missing_service_policy" {
  command = plan
  module {
    source = "./modules/vpc-endpoints"
  }
  variables {
    policies = {
      kinesis  = [{ sid = "K", principal_arns = ["arn:aws:iam::123456789012:role/p"], actions = ["kinesis:PutRecords"], resources = ["arn:aws:kinesis:eu-west-1:123456789012:stream/s"] }]
      kms      = [{ sid = "M", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["kms:Decrypt"], resources = ["arn:aws:kms:eu-west-1:123456789012:key/k"] }]
      firehose = [{ sid = "F", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["firehose:DescribeDeliveryStream"], resources = ["arn:aws:firehose:eu-west-1:123456789012:deliverystream/f"] }]
    }
  }
  expect_failures = [var.policies]
}

run "rejects_wildcard_action" {
  command = plan
  module {
    source = "./modules/vpc-endpoints"
  }
  variables {
    policies = {
      kinesis  = [{ sid = "K", principal_arns = ["arn:aws:iam::123456789012:role/p"], actions = ["kinesis:*"], resources = ["arn:aws:kinesis:eu-west-1:123456789012:stream/s"] }]
      kms      = [{ sid = "M", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["kms:Decrypt"], resources = ["arn:aws:kms:eu-west-1:123456789012:key/k"] }]
      firehose = [{ sid = "F", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["firehose:DescribeDeliveryStream"], resources = ["arn:aws:firehose:eu-west-1:123456789012:deliverystream/f"] }]
      s3       = [{ sid = "S", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["s3:GetObject"], resources = ["arn:aws:s3:::b/*"] }]
    }
  }
  expect_failures = [var.policies]
}

run "rejects_star_resource" {
  command = plan
  module {
    source = "./modules/vpc-endpoints"
  }
  variables {
    policies = {
      kinesis  = [{ sid = "K", principal_arns = ["arn:aws:iam::123456789012:role/p"], actions = ["kinesis:PutRecords"], resources = ["*"] }]
      kms      = [{ sid = "M", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["kms:Decrypt"], resources = ["arn:aws:kms:eu-west-1:123456789012:key/k"] }]
      firehose = [{ sid = "F", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["firehose:DescribeDeliveryStream"], resources = ["arn:aws:firehose:eu-west-1:123456789012:deliverystream/f"] }]
      s3       = [{ sid = "S", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["s3:GetObject"], resources = ["arn:aws:s3:::b/*"] }]
    }
  }
  expect_failures = [var.policies]
}

run "rejects_wildcard_principal" {
  command = plan
  module {
    source = "./modules/vpc-endpoints"
  }
  variables {
    policies = {
      kinesis  = [{ sid = "K", principal_arns = ["*"], actions = ["kinesis:PutRecords"], resources = ["arn:aws:kinesis:eu-west-1:123456789012:stream/s"] }]
      kms      = [{ sid = "M", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["kms:Decrypt"], resources = ["arn:aws:kms:eu-west-1:123456789012:key/k"] }]
      firehose = [{ sid = "F", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["firehose:DescribeDeliveryStream"], resources = ["arn:aws:firehose:eu-west-1:123456789012:deliverystream/f"] }]
      s3       = [{ sid = "S", principal_arns = ["arn:aws:iam::123456789012:role/c"], actions = ["s3:GetObject"], resources = ["arn:aws:s3:::b/*"] }]
    }
  }
  expect_failures = [var.policies]
}
