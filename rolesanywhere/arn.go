package rolesanywhere

import "github.com/kube2ra/kube2ra/arn"

// EndpointFor is the Roles Anywhere endpoint of a region:
// https://rolesanywhere.{region}.amazonaws.com, or rolesanywhere-fips.
func EndpointFor(partition, region string, fips bool) string {
	host := "rolesanywhere"
	if fips {
		host = "rolesanywhere-fips"
	}
	return "https://" + host + "." + region + "." + arn.DNSSuffix(partition)
}
