# One IAM role with a single inline policy of explicit actions on explicit ARNs. The variable
# validations make a wildcard action or a "*" resource a plan-time error, not a review comment.

locals {
  role_name = "${var.prefix}-${var.name}"

  policy = {
    Version = "2012-10-17"
    Statement = [for s in var.statements : merge(
      {
        Sid      = s.sid
        Effect   = "Allow"
        Action   = s.actions
        Resource = s.resources
      },
      length(s.conditions) == 0 ? {} : {
        Condition = { for test in distinct([for c in s.conditions : c.test]) : test => {
          for c in s.conditions : c.variable => c.values if c.test == test
        } }
      },
    )]
  }
}

resource "aws_iam_role" "this" {
  name                 = local.role_name
  description          = var.description
  max_session_duration = var.max_session_duration_seconds
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "TrustedPrincipals"
      Effect    = "Allow"
      Principal = { AWS = var.trusted_principal_arns }
      Action    = ["sts:AssumeRole"]
    }]
  })
  tags = merge(var.tags, { Name = local.role_name })
}

resource "aws_iam_role_policy" "this" {
  name   = local.role_name
  role   = aws_iam_role.this.id
  policy = jsonencode(local.policy)
}
